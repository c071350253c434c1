"""The dashboard's pages: server-rendered HTML, refreshed in place by htmx.

Every page has a stable URL (``/queues/<name>?state=dead&function=...``,
``/jobs/<id>``) that alerts and chat can link to. Forms post to the same handlers the
API has, and redirect back (post/redirect/get) with a notice of what was done.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, get, post
from litestar.exceptions import ValidationException
from litestar.params import FromQuery, URLEncodedBody
from litestar.response import Redirect, Template

from jobs import JobsError
from jobs.cluster import paused, pools_of, supervisors
from jobs.effective import published_functions
from jobs.events import recent_events
from jobs.query import (
    LISTED_STATES,
    JobFilter,
    act_on,
    act_on_matching,
    clear_queue,
    dead_groups,
    iso,
    job_view,
    list_jobs,
)
from jobs.query.bulk import copy_job
from jobs.query.groups import DEFAULT_SCAN, MAX_SCAN
from jobs.query.overview import fleet
from jobs.stats import queue_stats
from jobs.steering import reload_supervisor, scale_pool, steer_queue
from jobs.store.keys import check_name
from supervisor.runtime.scaling import POOL_MAX
from supervisor.web.api import job_filter, known_job, pool_action, who
from supervisor.web.params import BrokerDep, GroupScan, InPath, Query, StateName
from supervisor.web.security import admin_only

Form = URLEncodedBody[dict[str, Any]]
FILTER_FIELDS = ("function", "error_type", "text", "older_than", "newer_than")


def page(request: Request[Any, Any, Any], name: str, **context: Any) -> Template:
    session = request.scope.get("session")
    notice = session.pop("notice", None) if isinstance(session, dict) else None
    root = root_of(request)
    return Template(template_name=name, context={
        "user": request.user, "notice": notice, "refresh": request.app.state.refresh_ms,
        "root": root, "path": request.url.path.removeprefix(root), **context})


def root_of(request: Request[Any, Any, Any]) -> str:
    """The path the app is mounted at ("" when it is served on its own): the ASGI
    ``root_path`` (Starlette's and FastAPI's Mount, ``uvicorn --root-path``), else what a
    Litestar mount took off the front of the path."""
    scope = request.scope
    root = str(scope.get("root_path", ""))
    if not root:
        raw = bytes(scope.get("raw_path") or b"").decode("latin-1")
        path = str(scope.get("path", ""))
        if raw != path and raw.endswith(path):
            root = raw[: len(raw) - len(path)]
    return root.rstrip("/")


def back(request: Request[Any, Any, Any], url: str, notice: str) -> Redirect:
    session = request.scope.get("session")
    if isinstance(session, dict):
        session["notice"] = notice
    return Redirect(path=root_of(request) + url, status_code=303)


def _form_filter(form: dict[str, Any]) -> JobFilter:
    def seconds(name: str) -> float | None:
        raw = str(form.get(name) or "").strip()
        if not raw:
            return None
        try:
            return float(raw)
        except ValueError:
            raise ValidationException(f"{name} must be a number of seconds, not {raw!r}") \
                from None

    return job_filter(form.get("function"), form.get("error_type"), form.get("text"),
                      seconds("older_than"), seconds("newer_than"))


def _filter_query(where: JobFilter, **extra: Any) -> str:
    fields = {k: v for k, v in ((f, getattr(where, f)) for f in FILTER_FIELDS) if v is not None}
    fields.update({k: v for k, v in extra.items() if v})
    return urlencode(fields)


class Pages(Controller):
    path = "/"
    include_in_schema = False

    @get("/", sync_to_thread=True)
    def overview(self, request: Request[Any, Any, Any], broker: BrokerDep) -> Template:
        entries = supervisors(broker)
        return page(request, "overview.html", queues=queue_stats(broker),
                    fleet=fleet(entries), hosts=entries)

    @get("/queues/{queue:str}", sync_to_thread=True)
    def queue(self, request: Request[Any, Any, Any], broker: BrokerDep, queue: InPath,
              state_name: StateName = "queued", function: Query = None,
              error_type: Query = None, text: Query = None,
              older_than: Query = None, newer_than: Query = None,
              cursor: Query = None, order: FromQuery[str] = "newest") -> Template:
        where = _form_filter({"function": function, "error_type": error_type, "text": text,
                              "older_than": older_than, "newer_than": newer_than})
        listing = list_jobs(broker, queue, state_name, where=where, cursor=cursor, limit=50,
                            newest_first=order != "oldest")
        stats = queue_stats(broker, [check_name("queue", queue)])[0]
        published = published_functions(broker)
        return page(request, "queue.html", queue=queue, state=state_name, states=LISTED_STATES,
                    stats=stats, where=where, order=order, listing=listing,
                    jobs=[job_view(r, broker, published=published) for r in listing.jobs],
                    functions=sorted(published), cursor=cursor,
                    next_query=_filter_query(where, state=state_name, order=order,
                                             cursor=listing.next),
                    filter_query=_filter_query(where, state=state_name, order=order),
                    filtered=not where.is_empty())

    @post("/queues/{queue:str}/act", guards=[admin_only], sync_to_thread=True)
    def act(self, request: Request[Any, Any, Any], broker: BrokerDep, queue: InPath,
            data: Form) -> Redirect:
        check_name("queue", queue)
        state = str(data.get("state", "queued"))
        where = _form_filter(data)
        action = str(data.get("action", ""))
        url = f"/queues/{queue}?{_filter_query(where, state=state)}"
        if data.get("scope") == "all":
            outcome = act_on_matching(broker, queue, state, action, where=where,
                                      who=who(request))
            what = f"all {state} jobs matching the filter"
        else:
            ids = data.get("ids") or []
            ids = [ids] if isinstance(ids, str) else list(ids)
            if not ids:
                return back(request, url, "no jobs chosen: tick some, or act on all matching")
            outcome = act_on(broker, queue, ids, action, who=who(request))
            what = f"{len(ids)} chosen job(s)"
        skipped = f", {outcome.skipped} skipped" if outcome.skipped else ""
        return back(request, url, f"{action}: {outcome.done} of {what}{skipped}")

    @post("/queues/{queue:str}/pause", guards=[admin_only], sync_to_thread=True)
    def pause(self, request: Request[Any, Any, Any], broker: BrokerDep, queue: InPath) -> Redirect:
        pausing = queue not in paused(broker)
        steer_queue(queue, paused=pausing, who=who(request), broker=broker)
        return back(request, f"/queues/{queue}",
                    f"{'paused' if pausing else 'resumed'} queue {queue}")

    @get("/queues/{queue:str}/clear", sync_to_thread=True)
    def confirm_clear(self, request: Request[Any, Any, Any], broker: BrokerDep,
                      queue: InPath) -> Template:
        stats = queue_stats(broker, [check_name("queue", queue)])[0]
        return page(request, "clear.html", queue=queue, count=stats.queued)

    @post("/queues/{queue:str}/clear", guards=[admin_only], sync_to_thread=True)
    def clear(self, request: Request[Any, Any, Any], broker: BrokerDep, queue: InPath) -> Redirect:
        outcome = clear_queue(broker, check_name("queue", queue), who=who(request))
        return back(request, f"/queues/{queue}",
                    f"cleared {outcome.done} queued job(s) of {queue}")

    @get("/jobs/{job_id:str}", sync_to_thread=True)
    def job(self, request: Request[Any, Any, Any], broker: BrokerDep, job_id: InPath) -> Template:
        job = known_job(job_id, broker)
        view = job_view(job.record, broker, broker.jobs.job_log(job_id))
        dependents = sorted(m.decode() for m in broker.client.smembers(broker.keys.kids(job_id)))
        return page(request, "job.html", job=view, events=recent_events(broker, 200, job=job_id),
                    dependents=dependents, pretty=_pretty, iso=iso)

    @post("/jobs/{job_id:str}/act", guards=[admin_only], sync_to_thread=True)
    def job_act(self, request: Request[Any, Any, Any], broker: BrokerDep, job_id: InPath,
                data: Form) -> Redirect:
        job = known_job(job_id, broker)
        action = str(data.get("action", ""))
        if action == "copy":
            copied = copy_job(broker, job_id, who=who(request))
            return back(request, f"/jobs/{copied}", f"enqueued a copy of {job_id}")
        outcome = act_on(broker, job.queue, [job_id], action, who=who(request))
        if action == "delete" and outcome.done:
            return back(request, f"/queues/{job.queue}", f"deleted job {job_id}")
        said = "done" if outcome.done else f"not done: the job is {job.refresh().state}"
        return back(request, f"/jobs/{job_id}", f"{action}: {said}")

    @get("/dead", sync_to_thread=True)
    def dead(self, request: Request[Any, Any, Any], broker: BrokerDep,
             queue: Query = None, scan: GroupScan = DEFAULT_SCAN) -> Template:
        stats = queue_stats(broker)
        names = [s.queue for s in stats if s.dead] or [s.queue for s in stats][:1]
        chosen = queue or (names[0] if names else "default")
        total = next((s.dead for s in stats if s.queue == chosen), 0)
        return page(request, "dead.html", queue=chosen, queues=names, total=total,
                    found=dead_groups(broker, chosen, scan=scan), iso=iso,
                    more=min(MAX_SCAN, scan * 10))

    @post("/dead/{queue:str}/act", guards=[admin_only], sync_to_thread=True)
    def dead_act(self, request: Request[Any, Any, Any], broker: BrokerDep, queue: InPath,
                 data: Form) -> Redirect:
        where = JobFilter(function=str(data.get("function") or "") or None,
                          error_type=str(data.get("error_type") or "") or None)
        action = str(data.get("action", ""))
        outcome = act_on_matching(broker, queue, "dead", action, where=where, who=who(request))
        return back(request, f"/dead?queue={queue}",
                    f"{action}: {outcome.done} dead job(s) of {where.function}")

    @get("/hosts", sync_to_thread=True)
    def hosts(self, request: Request[Any, Any, Any], broker: BrokerDep) -> Template:
        entries = supervisors(broker)
        hosts = [{**e, "pools": pools_of(e), "has_pools": "pools" in e} for e in entries]
        return page(request, "hosts.html", hosts=hosts, fleet=fleet(entries), iso=iso)

    @post("/hosts/{ident:str}/scale", guards=[admin_only], sync_to_thread=True)
    def scale(self, request: Request[Any, Any, Any], broker: BrokerDep, ident: InPath,
              data: Form) -> Redirect:
        try:
            workers = int(str(data.get("workers", "")))
        except ValueError:
            return back(request, "/hosts", "scale: give a whole number of workers")
        pool = str(data.get("pool") or "") or None
        try:
            said = scale_pool(ident, workers, pool=pool, pool_max=POOL_MAX, who=who(request),
                              broker=broker).message
        except JobsError as exc:
            said = str(exc)
        return back(request, "/hosts", said)

    @post("/hosts/{ident:str}/pools/{pool:str}/{action:str}", guards=[admin_only],
          sync_to_thread=True)
    def pool_pause(self, request: Request[Any, Any, Any], broker: BrokerDep, ident: InPath,
                   pool: InPath, action: InPath) -> Redirect:
        try:
            said = pool_action(request, broker, ident, pool, action)
        except JobsError as exc:
            said = str(exc)
        return back(request, "/hosts", said)

    @post("/hosts/{ident:str}/reload", guards=[admin_only], sync_to_thread=True)
    def reload(self, request: Request[Any, Any, Any], broker: BrokerDep, ident: InPath) -> Redirect:
        return back(request, "/hosts",
                    reload_supervisor(ident, who=who(request), broker=broker).message)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=repr)
