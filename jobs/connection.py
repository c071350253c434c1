"""Turning a URL (or nothing) into a Redis client, and Redis failures into clear errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry as RedisRetry

from jobs.errors import BrokerError, BrokerUnavailable, ConfigurationError
from jobs.settings import RedisSettings

SOCKET_NAME = "valkey.sock"
DEFAULT_DATA_DIR = "./var"
_SCHEMES = ("redis", "rediss", "unix")


def embedded_url(data_dir: str | os.PathLike[str]) -> str:
    """The URL of the embedded server the supervisor starts in ``data_dir``."""
    return f"unix://{Path(data_dir).resolve() / SOCKET_NAME}"


def resolve_url(settings: RedisSettings, data_dir: str | None = None) -> str:
    """Explicit URL, else ``JOBVISOR_REDIS_URL``, else the embedded server's socket."""
    url = settings.url or os.environ.get("JOBVISOR_REDIS_URL", "")
    if url:
        return url
    data_dir = data_dir or os.environ.get("JOBVISOR_SUPERVISOR_DATA_DIR") or DEFAULT_DATA_DIR
    return embedded_url(data_dir)


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``: safe for logs and messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}" if user else f":***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def read_password(settings: RedisSettings) -> str | None:
    """A password from ``JOBVISOR_REDIS_PASSWORD`` or ``password_file``, never from config."""
    env = os.environ.get("JOBVISOR_REDIS_PASSWORD")
    if env:
        return env
    if settings.password_file:
        try:
            return Path(settings.password_file).read_text().strip()
        except OSError as exc:
            raise ConfigurationError(
                f"redis.password_file {settings.password_file!r} cannot be read: {exc.strerror}"
            ) from None
    return None


def make_client(url: str, settings: RedisSettings, retries: int = 3) -> redis.Redis:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"redis URL {redact(url)!r} must start with redis://, rediss:// or unix://"
        )
    kwargs: dict[str, object] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "health_check_interval": 30,
        "retry": RedisRetry(ExponentialBackoff(cap=1.0, base=0.05), retries=retries),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }
    password = read_password(settings)
    if password is not None:
        kwargs["password"] = password
    try:
        return redis.Redis.from_url(url, **kwargs)
    except ValueError as exc:
        raise ConfigurationError(f"redis URL {redact(url)!r} is not valid: {exc}") from None


def unavailable_message(url: str, exc: BaseException) -> str:
    shown = redact(url)
    hint = "check that the server is running and the URL is right"
    if url.startswith("unix://") and url.endswith(SOCKET_NAME):
        hint = (
            "start the supervisor with `jobvisor run` (it starts the embedded server), "
            "or set JOBVISOR_REDIS_URL to your Redis"
        )
    detail = str(exc).replace(url, shown)
    return f"cannot reach Redis at {shown}: {detail}; {hint}"


@contextmanager
def translated(url: str) -> Iterator[None]:
    """Re-raise redis-py connection failures as ``BrokerUnavailable`` with a redacted URL."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise BrokerUnavailable(unavailable_message(url, exc)) from None
    except redis.RedisError as exc:
        raise BrokerError(
            f"Redis at {redact(url)} refused the command: {exc}"
            f"{_hint(str(exc))}"
        ) from None


def _hint(message: str) -> str:
    if message.startswith("OOM"):
        return "; the server is at maxmemory: free memory or raise maxmemory, then retry"
    if message.startswith("NOPERM"):
        return "; the ACL user lacks a command or key pattern jobvisor needs"
    if message.startswith("READONLY"):
        return "; this is a replica: point the URL at the primary (or use Sentinel)"
    return ""
