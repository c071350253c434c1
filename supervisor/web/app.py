"""The dashboard and HTTP API as one ASGI application.

``create_app(config)`` builds it; ``jobvisor dashboard`` serves it with uvicorn, and a
user can mount it inside their own Starlette, FastAPI or Litestar application.
"""

from __future__ import annotations

import logging
import secrets
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import quote

from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
)
from litestar.middleware import DefineMiddleware
from litestar.middleware.session.server_side import ServerSideSessionConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.params import FromQuery, URLEncodedBody
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.stores.memory import MemoryStore
from litestar.template.config import TemplateConfig

import jobs
from jobs.errors import BrokerUnavailable, ConfigurationError, JobsError
from jobs.health import LIVE_BODY, check_health, response
from jobs.store.broker import Broker
from supervisor.config import Config, HealthSettings
from supervisor.web.accounts import Accounts
from supervisor.web.api import DeadApi, EventsApi, FleetApi, JobsApi, QueuesApi
from supervisor.web.batches import BatchesApi, BatchPages
from supervisor.web.pages import Pages, root_of
from supervisor.web.schedules import SchedulePages, SchedulesApi
from supervisor.web.security import SecurityHeaders, csrf, sign_in

log = logging.getLogger("jobvisor.dashboard")
HERE = Path(__file__).parent


def _broker(state: State) -> Broker:
    broker: Broker = state.broker
    return broker


def _wants_json(request: Request[Any, Any, Any]) -> bool:
    return request.url.path.startswith("/api/") or "text/html" not in request.headers.get(
        "accept", "")


def _error(request: Request[Any, Any, Any], status: int, message: str) -> Response[Any]:
    if _wants_json(request):
        return Response({"error": message, "status": status}, status_code=status)
    return Template(template_name="error.html", status_code=status, media_type=MediaType.HTML,
                    context={"status": status, "message": message, "root": root_of(request),
                             "user": request.scope.get("user")})


def _on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, NotAuthorizedException) and not _wants_json(request):
        root = root_of(request)
        target = quote(request.url.path.removeprefix(root) or "/")
        return Redirect(path=f"{root}/login?next={target}", status_code=303)
    if isinstance(exc, PermissionDeniedException):
        return _error(request, 403, exc.detail or "forbidden")
    return _error(request, exc.status_code, exc.detail)


def _on_jobs_error(request: Request[Any, Any, Any], exc: JobsError) -> Response[Any]:
    if isinstance(exc, BrokerUnavailable):
        return _error(request, 503, str(exc))
    if isinstance(exc, jobs.JobNotFound | jobs.ScheduleNotFound):
        return _error(request, 404, str(exc))
    return _error(request, 400 if isinstance(exc, ConfigurationError) else 500, str(exc))


@get("/healthz", tags=["health"], summary="Alive: the dashboard process answers")
async def healthz() -> Response[bytes]:
    return Response(LIVE_BODY, media_type=MediaType.JSON)


@get("/readyz", tags=["health"], sync_to_thread=True,
     summary="Ready: Redis answers, a supervisor is live, the [health] thresholds hold")
def readyz(request: Request[Any, Any, Any]) -> Response[bytes]:
    """200 or 503 with every check, bounded by ``[health] redis_timeout``."""
    state = request.app.state
    limits: HealthSettings = state.health
    status, body = response(check_health(
        state.broker, max_lag=limits.max_lag or None, max_dead=limits.max_dead or None,
        redis_timeout=limits.redis_timeout))
    return Response(body, status_code=status, media_type=MediaType.JSON)


@get("/login", include_in_schema=False)
async def login_form(request: Request[Any, Any, Any], next: FromQuery[str] = "/") -> Template:
    return Template(template_name="login.html", context={
        "next": _local(next), "user": None, "failed": False, "root": root_of(request)})


@post("/login", include_in_schema=False, sync_to_thread=True)
def login(request: Request[Any, Any, Any],
          data: URLEncodedBody[dict[str, str]],
          ) -> Response[Any]:
    accounts: Accounts | None = request.app.state.accounts
    name, secret = data.get("name", ""), data.get("password", "")
    user = accounts.check(name, secret) if accounts else None
    if user is None:
        log.warning("dashboard sign-in refused for %r from %s", name,
                    request.client.host if request.client else "?")
        return Template(template_name="login.html", status_code=401, context={
            "next": _local(data.get("next", "/")), "user": None, "failed": True,
            "root": root_of(request)})
    request.set_session({"user": user.name})
    log.info("dashboard: %s signed in from %s", user.name,
             request.client.host if request.client else "?")
    return Redirect(path=root_of(request) + _local(data.get("next", "/")), status_code=303)


@post("/logout", include_in_schema=False)
async def logout(request: Request[Any, Any, Any]) -> Redirect:
    request.clear_session()
    return Redirect(path=f"{root_of(request)}/login", status_code=303)


def _local(target: str) -> str:
    """Only a path of this site: a login link cannot send anyone elsewhere."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def create_app(config: Config, *, broker: Broker | None = None,
               accounts: Accounts | None = None) -> Litestar:
    """The app for ``config``'s namespace; ``accounts`` (else ``[dashboard] users_file``)
    names who may sign in: with none, everyone who can reach it is an admin."""
    settings = config.dashboard
    if accounts is None and settings.users_file:
        accounts = Accounts.load(settings.users_file)
    broker = broker or jobs.connect(redis_settings=config.redis, defaults=config.defaults,
                                    data_dir=config.supervisor.data_dir,
                                    encryption=config.encryption)
    state = State({"broker": broker, "accounts": accounts, "read_only": settings.read_only,
                   "health": config.health, "schedules": config.schedules,
                   "refresh_ms": int(settings.refresh * 1000)})
    secret = secrets.token_hex(32)
    sessions = ServerSideSessionConfig(key="jobvisor-session", httponly=True, samesite="strict",
                                       max_age=12 * 3600)
    return Litestar(
        route_handlers=[
            Pages, QueuesApi, JobsApi, FleetApi, DeadApi, EventsApi,
            SchedulePages, SchedulesApi, BatchPages, BatchesApi,
            healthz, readyz, login_form, login, logout,
            create_static_files_router(path="/static", directories=[HERE / "static"],
                                       include_in_schema=False, opt={"exclude_from_auth": True}),
        ],
        state=state,
        dependencies={"broker": Provide(_broker, sync_to_thread=False)},
        middleware=[DefineMiddleware(SecurityHeaders), sessions.middleware, csrf(secret),
                    sign_in()],
        stores={"sessions": MemoryStore()},
        template_config=TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine,
                                       engine_callback=_template_helpers),
        openapi_config=OpenAPIConfig(title="jobvisor", version=_version(), path="/api",
                                     render_plugins=[JsonRenderPlugin()]),
        exception_handlers={HTTPException: _on_http_error, JobsError: _on_jobs_error,
                            NotFoundException: _on_http_error},
        debug=False,
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"


def _template_helpers(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters["duration"] = _duration


def _version() -> str:
    try:
        return version("jobvisor")
    except PackageNotFoundError:
        return "0"
