"""Turning a URL (or nothing) into a Redis client, and Redis failures into clear errors.

URLs: ``redis://``, ``rediss://`` (TLS), ``unix://`` (``jobs.store.urls``), Sentinel
(``jobs.store.sentinel``) and Redis Cluster (``jobs.store.slot_owner``).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AskError,
    ClusterDownError,
    InvalidResponse,
    MovedError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
)
from redis.retry import Retry as RedisRetry
from redis.sentinel import MasterNotFoundError

from jobs.errors import BrokerError, BrokerUnavailable, ConfigurationError
from jobs.settings import RedisSettings
from jobs.store.sentinel import sentinel_client
from jobs.store.slot_owner import CLUSTER_SCHEMES, cluster_client
from jobs.store.tls import ForkSafeSSLConnection, tls_options
from jobs.store.urls import SOCKET_NAME, TLS_SCHEMES, redact, scheme_of

_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", *CLUSTER_SCHEMES)
# Replies only a Redis Cluster node gives.
CLUSTER_CODES = frozenset({"MOVED", "ASK", "CROSSSLOT", "CLUSTERDOWN", "TRYAGAIN"})


def _secret(env: str, file_key: str, path: str) -> str | None:
    value = os.environ.get(env)
    if value:
        return value
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigurationError(
                f"redis.{file_key} {path!r} cannot be read: {exc.strerror}"
            ) from None
    return None


def read_password(settings: RedisSettings) -> str | None:
    """A password from ``JOBVISOR_REDIS_PASSWORD`` or ``password_file``, never from config."""
    return _secret("JOBVISOR_REDIS_PASSWORD", "password_file", settings.password_file)


def read_sentinel_password(settings: RedisSettings) -> str | None:
    """The sentinels' password: ``JOBVISOR_REDIS_SENTINEL_PASSWORD`` or its file."""
    return _secret("JOBVISOR_REDIS_SENTINEL_PASSWORD", "sentinel_password_file",
                   settings.sentinel_password_file)


def _named(name: str) -> Any:
    """A connect step that names the connection, tolerating a refusal: an ACL user
    without ``+client|setname`` keeps working, unnamed (redis-py's own naming would fail
    the connection)."""
    def connect(conn: Any) -> None:
        conn.on_connect()
        try:
            conn.send_command("CLIENT", "SETNAME", name)
            conn.read_response()
        except redis.ResponseError:
            pass
    return connect


def make_client(url: str, settings: RedisSettings, retries: int = 3, *,
                name: str | None = None, max_connections: int | None = None) -> redis.Redis:
    """A client for ``url``. ``name``: what ``CLIENT LIST`` shows for its connections.
    ``max_connections``: the most its pool opens; a thread that finds them all in use
    waits for one (up to ``socket_timeout``) instead of opening another, and scripts share
    one more connection (see ``ScriptRunner``)."""
    scheme = scheme_of(url)
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"redis URL {redact(url)!r} must start with redis://, rediss:// (TLS), unix://, "
            "redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://"
        )
    kwargs: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "health_check_interval": 30,
        "retry": RedisRetry(ExponentialBackoff(cap=1.0, base=0.05), retries=retries),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
        **tls_options(url, settings),
    }
    password = read_password(settings)
    if password is not None:
        kwargs["password"] = password
    if name:
        kwargs["redis_connect_func"] = _named(name)
    if scheme.endswith("+sentinel"):
        return sentinel_client(url, settings, kwargs, read_sentinel_password(settings),
                               max_connections)
    if scheme in CLUSTER_SCHEMES:
        return cluster_client(url, settings, kwargs, max_connections)
    if scheme in TLS_SCHEMES:
        kwargs["connection_class"] = ForkSafeSSLConnection
    try:
        if max_connections:
            pool = redis.BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=settings.socket_timeout,
                **kwargs)
            return redis.Redis(connection_pool=pool)
        return redis.Redis.from_url(url, **kwargs)
    except ValueError as exc:
        raise ConfigurationError(f"redis URL {redact(url)!r} is not valid: {exc}") from None


def unavailable_message(url: str, exc: BaseException) -> str:
    shown = redact(url)
    detail = str(exc).replace(url, shown).rstrip(". ")
    return f"cannot reach Redis at {shown}: {detail}; {_unavailable_hint(url, exc, detail)}"


def _unavailable_hint(url: str, exc: BaseException, detail: str) -> str:
    if isinstance(exc, redis.AuthenticationError):
        return ("check the ACL user in the URL and the password (JOBVISOR_REDIS_PASSWORD or "
                "redis.password_file)")
    if "CERTIFICATE_VERIFY_FAILED" in detail and "mismatch" in detail:
        return ("the server's TLS certificate does not name the URL's host: connect by a "
                "name the certificate lists, or set redis.tls_check_hostname = false to "
                "skip only the name check")
    if "CERTIFICATE_VERIFY_FAILED" in detail:
        return ("the server's TLS certificate was not accepted: redis.tls_ca_file must name "
                "the CA that signed it (empty: the system's CAs)")
    if scheme_of(url) in TLS_SCHEMES and any(s in detail for s in (
            "CERTIFICATE_REQUIRED", "EOF occurred in violation of protocol", "alert")):
        return ("the server ended the TLS handshake: if it requires client certificates "
                "(tls-auth-clients), set redis.tls_cert_file and redis.tls_key_file to a "
                "certificate signed by a CA it trusts")
    if "no permissions" in detail:
        return ("the ACL user lacks a command jobvisor needs (see the README's minimal ACL "
                "for each role)")
    if isinstance(exc, MasterNotFoundError):
        return ("no sentinel named a healthy primary for this service: check the service "
                "name and the sentinel addresses; during a failover this clears once a "
                "replica is promoted")
    if url.startswith("unix://") and url.endswith(SOCKET_NAME):
        return ("start the supervisor with `jobvisor run` (it starts the embedded server), "
                "or set JOBVISOR_REDIS_URL to your Redis")
    return "check that the server is running and the URL is right"


class translated:  # used like a function: ``with translated(url):``
    """Re-raise redis-py connection failures as ``BrokerUnavailable`` with a redacted URL.

    A class rather than a generator: it wraps every hot call, where a generator-based
    context manager costs several Python calls per use."""

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None and isinstance(exc, redis.RedisError):
            raise translate(self.url, exc) from None


def translate(url: str, exc: redis.RedisError) -> BrokerUnavailable | BrokerError:
    """The jobvisor error a redis-py error stands for, its URL redacted."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return BrokerUnavailable(unavailable_message(url, exc))
    if isinstance(exc, InvalidResponse):
        return BrokerUnavailable(
            f"the server at {redact(url)} did not answer in the Redis protocol ({exc}): it is "
            "not a Redis/Valkey server; check the URL's host and port")
    code = _error_code(exc)
    text = str(exc).rstrip(". ")
    if code and not text.startswith(code):
        text = f"{code} {text}"  # redis-py strips the code it turned into a class
    return BrokerError(
        f"Redis at {redact(url)} refused the command: {text}{_hint(code, text)}", code)


def _error_code(exc: BaseException) -> str:
    """The server's error code (``NOPERM``, ``OOM``, ...), whichever way redis-py kept it."""
    code = getattr(exc, "status_code", None)
    if isinstance(code, str) and code:
        return code
    for cls, name in ((NoPermissionError, "NOPERM"), (OutOfMemoryError, "OOM"),
                      (ReadOnlyError, "READONLY"), (MovedError, "MOVED"), (AskError, "ASK"),
                      (ClusterDownError, "CLUSTERDOWN")):
        if isinstance(exc, cls):
            return name
    first = str(exc).split(" ", 1)[0]
    return first if first.isupper() else ""


def _hint(code: str, text: str = "") -> str:
    if code == "OOM":
        return "; the server is at maxmemory: free memory or raise maxmemory, then retry"
    # A command refused inside a Lua script comes back as "ERR ACL failure in script".
    if code == "NOPERM" or "ACL failure" in text:
        return ("; the ACL user lacks a command or key pattern jobvisor needs (see the "
                "README's minimal ACL for each role)")
    if code == "READONLY":
        return "; this is a replica: point the URL at the primary (or use Sentinel)"
    if code in CLUSTER_CODES:
        return ("; this server is a Redis Cluster node: reach a cluster with a "
                "redis+cluster:// URL (see the README's 'Redis Cluster' section)")
    return ""
