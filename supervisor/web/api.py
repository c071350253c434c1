"""The JSON HTTP API under ``/api``: what the pages show and do, for scripts.

Every handler reads or acts through ``jobs.query`` and the library, as the CLI does;
reads need a signed-in user, actions the admin role (and, from a browser, the CSRF
token). The OpenAPI schema is served at ``/api/openapi.json``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.exceptions import NotFoundException
from litestar.params import JSONBody, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from jobs import Job, JobNotFound
from jobs.cluster import supervisors
from jobs.effective import published_functions
from jobs.events import follow, recent_events
from jobs.query import (
    JobFilter,
    act_on,
    act_on_matching,
    clear_queue,
    dead_groups,
    job_view,
    list_jobs,
)
from jobs.query.bulk import Outcome, copy_job
from jobs.query.groups import DEFAULT_SCAN, DeadGroups
from jobs.query.overview import Fleet, Series, fleet, minute_series
from jobs.stats import QueueStats, queue_stats
from jobs.steering import reload_supervisor, scale_pool, steer_pool, steer_queue
from jobs.store.broker import Broker
from jobs.store.keys import check_name
from supervisor.runtime.scaling import POOL_MAX
from supervisor.web.accounts import User
from supervisor.web.params import BrokerDep, GroupScan, InPath, Query, Seconds, StateName
from supervisor.web.security import admin_only


class JobList(msgspec.Struct, kw_only=True):
    jobs: list[dict[str, Any]]
    next: str | None
    scanned: int
    exhausted: bool


class Selection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The jobs an action applies to: ``ids``, or every job in ``state`` that ``filter``
    matches when ``all_matching`` is true."""

    ids: list[str] = []
    all_matching: bool = False
    state: str = "dead"
    filter: JobFilter = JobFilter()


class ScaleRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    workers: int
    pool: str | None = None  # None: the default pool


class Overview(msgspec.Struct, kw_only=True):
    queues: list[QueueStats]
    fleet: Fleet
    series: Series


class Accepted(msgspec.Struct, kw_only=True):
    message: str


def who(request: Request[Any, Any, Any]) -> str:
    user: User = request.user
    host = request.client.host if request.client else "?"
    return f"web:{user.name}@{host}"


def job_filter(function: str | None, error_type: str | None, text: str | None,
               older_than: float | None, newer_than: float | None) -> JobFilter:
    return JobFilter(function=function or None, error_type=error_type or None,
                     text=text or None, older_than=older_than, newer_than=newer_than)


def known_job(job_id: str, broker: Broker) -> Job:
    try:
        return Job.fetch(check_name("job id", job_id), broker)
    except JobNotFound:
        raise NotFoundException(f"no job {job_id}: never enqueued, deleted, or expired") \
            from None


class QueuesApi(Controller):
    path = "/api"
    tags = ("queues",)

    @get(["/queues", "/queue/stats"], sync_to_thread=True,
         summary="Every queue's counts, recent outcomes, throughput and lag")
    def queues(self, broker: BrokerDep) -> list[QueueStats]:
        return queue_stats(broker)

    @get("/overview", sync_to_thread=True, summary="Queues, workers and the last hour")
    def overview(self, broker: BrokerDep) -> Overview:
        return Overview(queues=queue_stats(broker), fleet=fleet(broker=broker),
                        series=minute_series(broker))

    @get("/series", sync_to_thread=True, summary="Outcomes per minute, oldest first")
    def series(self, broker: BrokerDep, queue: Query = None,
               minutes: Annotated[int, QueryParameter(ge=1, le=120)] = 60) -> Series:
        return minute_series(broker, minutes, queue)

    @get("/queues/{queue:str}", sync_to_thread=True, summary="One queue's figures")
    def queue(self, broker: BrokerDep, queue: InPath) -> QueueStats:
        return queue_stats(broker, [check_name("queue", queue)])[0]

    @post("/queues/{queue:str}/pause", guards=[admin_only], sync_to_thread=True, status_code=200)
    def pause(self, request: Request[Any, Any, Any], broker: BrokerDep, queue: InPath) -> Accepted:
        return Accepted(message=steer_queue(queue, paused=True, who=who(request),
                                            broker=broker).message)

    @post("/queues/{queue:str}/resume", guards=[admin_only], sync_to_thread=True,
          status_code=200)
    def resume(self, request: Request[Any, Any, Any], broker: BrokerDep, queue: InPath) -> Accepted:
        return Accepted(message=steer_queue(queue, paused=False, who=who(request),
                                            broker=broker).message)

    @post("/queues/{queue:str}/clear", guards=[admin_only], sync_to_thread=True,
          status_code=200, summary="Cancel every queued job of the queue")
    def clear(self, request: Request[Any, Any, Any], broker: BrokerDep, queue: InPath) -> Outcome:
        return clear_queue(broker, check_name("queue", queue), who=who(request))


class JobsApi(Controller):
    path = "/api"
    tags = ("jobs",)

    @get("/queues/{queue:str}/jobs", sync_to_thread=True,
         summary="Jobs of one state, filtered, a page at a time (pass `next` as cursor)")
    def jobs(self, broker: BrokerDep, queue: InPath, state_name: StateName = "queued",
             function: Query = None, error_type: Query = None,
             text: Query = None, older_than: Seconds = None, newer_than: Seconds = None,
             cursor: Query = None, limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
             order: Annotated[str, QueryParameter(pattern="^(newest|oldest)$")] = "newest",
             ) -> JobList:
        page = list_jobs(broker, queue, state_name,
                         where=job_filter(function, error_type, text, older_than, newer_than),
                         cursor=cursor, limit=limit, newest_first=order == "newest")
        published = published_functions(broker)
        return JobList(jobs=[job_view(r, broker, published=published) for r in page.jobs],
                       next=page.next, scanned=page.scanned, exhausted=page.exhausted)

    @post("/queues/{queue:str}/jobs/{action:str}", guards=[admin_only], sync_to_thread=True,
          status_code=200, summary="requeue, cancel or delete the chosen or all matching jobs")
    def act(self, request: Request[Any, Any, Any], broker: BrokerDep, queue: InPath, action: InPath,
            data: JSONBody[Selection]) -> Outcome:
        check_name("queue", queue)
        if data.all_matching:
            return act_on_matching(broker, queue, data.state, action, where=data.filter,
                                   who=who(request))
        return act_on(broker, queue, data.ids, action, who=who(request))

    @get(["/jobs/{job_id:str}", "/job/{job_id:str}"], sync_to_thread=True,
         summary="Every field of one job, its log and its events")
    def job(self, broker: BrokerDep, job_id: InPath) -> dict[str, Any]:
        job = known_job(job_id, broker)
        view = job_view(job.record, broker, broker.jobs.job_log(job_id))
        view["events"] = recent_events(broker, 200, job=job_id)
        view["dependents"] = sorted(m.decode() for m in
                                    broker.client.smembers(broker.keys.kids(job_id)))
        return view

    @post("/jobs/{job_id:str}/{action:str}", guards=[admin_only], sync_to_thread=True,
          status_code=200, summary="requeue, cancel, delete or copy (enqueue again) one job")
    def job_action(self, request: Request[Any, Any, Any], broker: BrokerDep, job_id: InPath,
                   action: InPath) -> dict[str, Any]:
        job = known_job(job_id, broker)
        if action == "copy":
            copied = copy_job(broker, job_id, who=who(request))
            return {"action": "copy", "queue": job.queue, "done": 1, "skipped": 0, "id": copied}
        outcome = act_on(broker, job.queue, [job_id], action, who=who(request))
        return msgspec.to_builtins(outcome)  # type: ignore[no-any-return]


class FleetApi(Controller):
    path = "/api"
    tags = ("hosts and workers",)

    @get("/hosts", sync_to_thread=True, summary="Live supervisors with their workers")
    def hosts(self, broker: BrokerDep) -> list[dict[str, Any]]:
        return supervisors(broker)

    @get("/workers", sync_to_thread=True, summary="Every live worker")
    def workers(self, broker: BrokerDep) -> list[dict[str, Any]]:
        return [{"supervisor": e["id"], **w} for e in supervisors(broker) for w in e["workers"]]

    @post("/hosts/{ident:str}/scale", guards=[admin_only], sync_to_thread=True,
          status_code=200)
    def scale(self, request: Request[Any, Any, Any], broker: BrokerDep, ident: InPath,
              data: JSONBody[ScaleRequest]) -> Accepted:
        return Accepted(message=scale_pool(ident, data.workers, pool=data.pool,
                                           pool_max=POOL_MAX, who=who(request),
                                           broker=broker).message)

    @post("/hosts/{ident:str}/pools/{pool:str}/{action:str}", guards=[admin_only],
          sync_to_thread=True, status_code=200,
          summary="Pause a pool of one supervisor (its workers stay up, claiming nothing), "
                  "or resume it; action: pause or resume")
    def pool_pause(self, request: Request[Any, Any, Any], broker: BrokerDep, ident: InPath,
                   pool: InPath, action: InPath) -> Accepted:
        return Accepted(message=pool_action(request, broker, ident, pool, action))

    @post("/hosts/{ident:str}/reload", guards=[admin_only], sync_to_thread=True,
          status_code=200)
    def reload(self, request: Request[Any, Any, Any], broker: BrokerDep, ident: InPath) -> Accepted:
        return Accepted(message=reload_supervisor(ident, who=who(request),
                                                  broker=broker).message)


def pool_action(request: Request[Any, Any, Any], broker: Broker, ident: str, pool: str,
                action: str) -> str:
    """Pause or resume ``pool`` of supervisor ``ident``; what it says it did."""
    if action not in ("pause", "resume"):
        raise NotFoundException(f"no action {action!r} on a pool: pause or resume")
    return steer_pool(ident, pool, paused=action == "pause", who=who(request),
                      broker=broker).message


class DeadApi(Controller):
    path = "/api"
    tags = ("dead letters",)

    @get("/queues/{queue:str}/dead-groups", sync_to_thread=True,
         summary="The newest dead jobs grouped by function and error type, largest first")
    def groups(self, broker: BrokerDep, queue: InPath,
               scan: GroupScan = DEFAULT_SCAN) -> DeadGroups:
        return dead_groups(broker, queue, scan=scan)


class EventsApi(Controller):
    path = "/api"
    tags = ("events",)

    @get("/events", sync_to_thread=True,
         summary="Server-sent events: recent ones first, then each as it happens")
    def events(self, broker: BrokerDep, queue: Query = None, job: Query = None,
               recent: Annotated[int, QueryParameter(ge=0, le=1000)] = 20) -> ServerSentEvent:
        return ServerSentEvent(_event_stream(broker, queue, job, recent))


def _event_stream(broker: BrokerDep, queue: str | None, job: str | None,
                  recent: int) -> Iterator[str | ServerSentEventMessage]:
    """Recent events, then each new one; a comment line while idle keeps proxies open."""
    encode = msgspec.json.encode
    last = "$"
    for past in recent_events(broker, recent, queue=queue, job=job):
        last = past["event_id"]
        yield encode(past).decode()
    for event in follow(broker, since=last, queue=queue, job=job):
        yield encode(event).decode() if event is not None else ServerSentEventMessage(
            comment="idle")
