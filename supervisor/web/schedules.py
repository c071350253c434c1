"""Cron schedules in the dashboard and the API: every schedule supervisors fire (config.toml
ones as live supervisors publish them, and API ones) with its next and last fire; pause,
resume and trigger now, for the whole cluster, through ``jobs.schedule_control``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.response import Redirect, Template

from jobs.errors import ScheduleNotFound
from jobs.query import schedule_rows
from jobs.schedule_control import pause_schedule, resume_schedule, trigger_schedule
from jobs.schedules import Schedule
from jobs.store.broker import Broker
from supervisor.web.api import who
from supervisor.web.pages import back, page
from supervisor.web.params import BrokerDep, InPath
from supervisor.web.security import admin_only

NEXT = 3  # next fire times shown per schedule


class ScheduleChange(msgspec.Struct, kw_only=True):
    message: str
    changed: bool  # False: it was paused (resumed) already
    job_id: str | None = None  # trigger: the job enqueued


def _config(request: Request[Any, Any, Any]) -> Sequence[Schedule]:
    """This process's own config.toml schedules (listed with what supervisors publish)."""
    schedules: Sequence[Schedule] = request.app.state.schedules
    return schedules


def _steer(request: Request[Any, Any, Any], broker: Broker, name: str,
           action: str) -> ScheduleChange:
    """Pause, resume or trigger ``name`` as the signed-in user (an unknown name: 404)."""
    config, by = _config(request), who(request)
    if action == "trigger":
        job_id = trigger_schedule(name, broker, config=config, who=by)
        return ScheduleChange(message=f"triggered {name}: enqueued job {job_id}",
                              changed=True, job_id=job_id)
    steer: Callable[..., bool] = pause_schedule if action == "pause" else resume_schedule
    changed = steer(name, broker, config=config, who=by)
    if action == "pause":
        said = "paused on every supervisor" if changed else "already paused"
    else:
        said = "resumed: it fires from its next tick on" if changed else "not paused"
    return ScheduleChange(message=f"{name}: {said}", changed=changed)


class SchedulePages(Controller):
    path = "/schedules"
    include_in_schema = False

    @get("/", sync_to_thread=True)
    def schedules(self, request: Request[Any, Any, Any], broker: BrokerDep) -> Template:
        return page(request, "schedules.html",
                    schedules=schedule_rows(broker, _config(request), NEXT))

    @post("/{name:str}/{action:str}", guards=[admin_only], sync_to_thread=True)
    def act(self, request: Request[Any, Any, Any], broker: BrokerDep, name: InPath,
            action: InPath) -> Redirect:
        if action not in ("pause", "resume", "trigger"):
            return back(request, "/schedules", f"unknown action {action!r}")
        try:
            done = _steer(request, broker, name, action)
        except ScheduleNotFound as exc:
            return back(request, "/schedules", str(exc))
        return back(request, "/schedules", done.message)


class SchedulesApi(Controller):
    path = "/api/schedules"
    tags = ("schedules",)

    @get("/", sync_to_thread=True,
         summary="Every schedule: source, cron, next fire times, last fire, paused")
    def schedules(self, request: Request[Any, Any, Any], broker: BrokerDep,
                  ) -> list[dict[str, Any]]:
        return schedule_rows(broker, _config(request), NEXT)

    @post("/{name:str}/pause", guards=[admin_only], sync_to_thread=True, status_code=200,
          summary="Stop firing the schedule on every supervisor")
    def pause(self, request: Request[Any, Any, Any], broker: BrokerDep,
              name: InPath) -> ScheduleChange:
        return _steer(request, broker, name, "pause")

    @post("/{name:str}/resume", guards=[admin_only], sync_to_thread=True, status_code=200,
          summary="Fire it again from its next tick (the ticks missed meanwhile never run)")
    def resume(self, request: Request[Any, Any, Any], broker: BrokerDep,
               name: InPath) -> ScheduleChange:
        return _steer(request, broker, name, "resume")

    @post("/{name:str}/trigger", guards=[admin_only], sync_to_thread=True, status_code=200,
          summary="Enqueue the schedule's job now, under an id of its own")
    def trigger(self, request: Request[Any, Any, Any], broker: BrokerDep,
                name: InPath) -> ScheduleChange:
        return _steer(request, broker, name, "trigger")
