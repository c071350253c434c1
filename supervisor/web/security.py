"""Sign-in, roles, CSRF and the headers every response carries.

- A person signs in through the login form and holds a server-side session; a script
  sends ``Authorization: Bearer NAME:SECRET``. With no users file the dashboard is open
  and refuses to bind beyond loopback (``supervisor.web.serve``).
- Every state-changing request from a browser carries the CSRF token (Litestar's
  double-submit cookie); a request with a Bearer header is exempt, because a browser
  never attaches one by itself.
- Job data is untrusted: pages escape it, and the Content-Security-Policy allows only
  the app's own scripts and styles (no inline ones), so a payload cannot run.
"""

from __future__ import annotations

from typing import Any

from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
    DefineMiddleware,
)
from litestar.middleware.csrf import CSRFMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from supervisor.web.accounts import Accounts, Role, User

PUBLIC = ["^/static/", "^/login$", "^/healthz$", "^/readyz$"]

HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
     b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def _bearer(headers: Any) -> str | None:
    value: str = headers.get("authorization", "")
    scheme, _, credentials = value.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


class BearerExemptCSRF(CSRFMiddleware):
    """Litestar's CSRF check, except for requests that carry a Bearer credential."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and _bearer(MutableScopeHeaders(scope)) is not None:
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class SignIn(AbstractAuthenticationMiddleware):
    """Sets ``request.user`` from a Bearer credential or the session, else refuses."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any],
                                   ) -> AuthenticationResult:
        state = connection.app.state
        accounts: Accounts | None = state.accounts
        user: User | None
        if accounts is None:
            user = User("local", Role.ADMIN)
        else:
            token = _bearer(connection.headers)
            if token is not None:
                name, _, secret = token.partition(":")
                user = accounts.check(name, secret)
            else:
                session = connection.scope.get("session")
                name = session.get("user", "") if isinstance(session, dict) else ""
                user = accounts.user(name) if name else None
        if user is None:
            raise NotAuthorizedException("sign in first")
        if state.read_only and user.role is Role.ADMIN:
            user = User(user.name, Role.VIEWER)
        return AuthenticationResult(user=user, auth=None)


def admin_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A guard: actions need the admin role (and a dashboard that is not read-only)."""
    user: User = connection.user
    if not user.is_admin:
        raise PermissionDeniedException(
            f"{user.name} is a {user.role.value}: this action needs the admin role")


def csrf(secret: str) -> DefineMiddleware:
    config = CSRFConfig(secret=secret, cookie_samesite="strict", cookie_httponly=False,
                        exclude=PUBLIC[:1] + PUBLIC[2:])
    return DefineMiddleware(BearerExemptCSRF, config=config)


def sign_in() -> DefineMiddleware:
    return DefineMiddleware(SignIn, exclude=PUBLIC)


class SecurityHeaders:
    """Adds ``HEADERS`` to every HTTP response, errors and static files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                for name, value in HEADERS:
                    headers[name.decode()] = value.decode()
            await send(message)

        await self.app(scope, receive, with_headers)
