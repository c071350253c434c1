"""Turning a URL (or nothing) into a Redis client, and Redis failures into clear errors.

URLs: ``redis://``, ``rediss://`` (TLS), ``unix://``, and Sentinel:
``redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/service[/db]``
(``rediss+sentinel://`` speaks TLS to the sentinels and to the data nodes). The user and
password in a Sentinel URL are those of the primary and replicas; the sentinels' own
password, if they have one, comes from ``JOBVISOR_REDIS_SENTINEL_PASSWORD`` or
``redis.sentinel_password_file``. A Sentinel client asks the sentinels for the primary
on every new connection, so after a failover it reconnects to the promoted replica.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import unquote

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.connection import SSLConnection
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
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelManagedConnection

from jobs.errors import BrokerError, BrokerUnavailable, ConfigurationError
from jobs.settings import RedisSettings
from jobs.store.slot_owner import (
    CLUSTER_SCHEMES,
    FollowSlotOwner,
    namespace_slot,
    parse_cluster_url,
)

SOCKET_NAME = "valkey.sock"
DEFAULT_DATA_DIR = "./var"
SENTINEL_PORT = 26379
_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", *CLUSTER_SCHEMES)
_TLS_SCHEMES = ("rediss", "rediss+sentinel", "rediss+cluster")
# Replies only a Redis Cluster node gives.
CLUSTER_CODES = frozenset({"MOVED", "ASK", "CROSSSLOT", "CLUSTERDOWN", "TRYAGAIN"})
_SECRET_QUERY = re.compile(r"([?&][^=&#\s]*pass[^=&#\s]*=)[^&#\s]*", re.IGNORECASE)


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


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``: safe for logs and messages.

    Works on every form, Sentinel's list of hosts included: the password is whatever
    follows the first ``:`` of the part before the last ``@`` of the authority, and
    any query parameter whose name contains "pass" (``password=``, ``ssl_password=``).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for mark in ("?", "#"):
        if mark in rest:
            end = min(end, rest.index(mark))
    head, tail = rest[:end], rest[end:]
    userinfo, at, hosts = head.rpartition("@")
    if at and ":" in userinfo:
        head = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    tail = _SECRET_QUERY.sub(r"\1***", tail)
    return f"{scheme}://{head}{tail}"


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


# -- fork safety of TLS ----------------------------------------------------------------
#
# OpenSSL is not fork-safe while another thread is inside it: a child forked at that
# moment inherits OpenSSL's internal locks, taken by a thread that does not exist in the
# child, and its first TLS handshake can then wait forever (observed: a worker hung in
# EVP_KEYEXCH_fetch, forked while the supervisor's Redis threads were connecting; see
# openssl/openssl#19066). So every TLS connection of this library sets itself up (context,
# handshake, the first replies, which carry the session tickets) under one process-wide
# lock, and a fork waits for that lock (at most FORK_WAIT seconds, so a handshake with a
# stalled server cannot delay a fork for long). The child starts with a fresh lock.

FORK_WAIT = 1.0
_tls_lock = threading.RLock()
_locked_for_fork = False


def _before_fork() -> None:
    global _locked_for_fork
    _locked_for_fork = _tls_lock.acquire(timeout=FORK_WAIT)


def _after_fork_in_parent() -> None:
    global _locked_for_fork
    if _locked_for_fork:
        _locked_for_fork = False
        _tls_lock.release()


def _after_fork_in_child() -> None:
    global _tls_lock, _locked_for_fork
    _tls_lock = threading.RLock()
    _locked_for_fork = False


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


class ForkSafeSSLConnection(SSLConnection):
    """redis-py's TLS connection, set up under the fork lock (see above)."""

    def _wrap_socket_with_ssl(self, sock: Any) -> Any:
        with _tls_lock:
            return super()._wrap_socket_with_ssl(sock)  # type: ignore[no-untyped-call]

    def on_connect_check_health(self, check_health: bool = True) -> None:
        # No health-check PING inside the handshake: the socket is new, and that PING
        # carried a retry loop of its own, nested in the connect's and the command's (a
        # refused client certificate was tried 15 times, 4 s of back-off, before the
        # error came out).
        with _tls_lock:
            super().on_connect_check_health(check_health=False)


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
    one more connection (see ``ScriptRunner``). Sentinel clients are not bounded."""
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
        return _sentinel_client(url, settings, kwargs)
    if scheme in CLUSTER_SCHEMES:
        return _cluster_client(url, settings, kwargs, max_connections)
    if scheme in _TLS_SCHEMES:
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


def tls_options(url: str, settings: RedisSettings) -> dict[str, Any]:
    """redis-py's ``ssl_*`` arguments from ``[redis] tls_*``; certificates always verified."""
    if scheme_of(url) not in _TLS_SCHEMES:
        if settings.tls_configured:
            raise ConfigurationError(
                f"redis.tls_* files are set but the URL {redact(url)!r} does not use TLS: "
                "use rediss:// (or rediss+sentinel://, rediss+cluster://)"
            )
        return {}
    return {
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": settings.tls_ca_file or None,  # None: the system's CAs
        "ssl_certfile": settings.tls_cert_file or None,
        "ssl_keyfile": settings.tls_key_file or None,
        "ssl_check_hostname": settings.tls_check_hostname,
    }


class SentinelTarget(NamedTuple):
    sentinels: list[tuple[str, int]]
    service: str
    db: int
    username: str | None
    password: str | None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Split ``redis+sentinel://[user[:password]@]h1[:p1][,h2[:p2]...]/service[/db]``."""
    def bad(problem: str) -> ConfigurationError:
        return ConfigurationError(
            f"Sentinel URL {redact(url)!r} {problem}; expected "
            "redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/service[/db]")

    rest = url.split("://", 1)[1]
    if "?" in rest or "#" in rest:
        raise bad("takes no query parameters (set options in [redis])")
    authority, _, path = rest.partition("/")
    userinfo, at, hostlist = authority.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = [_host_port(item, bad) for item in hostlist.split(",")]
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise bad("names no service (the name in `sentinel monitor <name> ...`)")
    if db and not db.isdigit():
        raise bad(f"has a database {db!r} that is not a number")
    return SentinelTarget(sentinels, unquote(service), int(db or 0), username, password)


def _host_port(item: str, bad: Any) -> tuple[str, int]:
    host, port = item, ""
    if item.startswith("["):  # [IPv6]:port
        host, _, port = item[1:].partition("]")
        port = port.removeprefix(":")
    elif ":" in item:
        host, _, port = item.rpartition(":")
    if not host or (port and not port.isdigit()) or (port and not 0 < int(port) < 65536):
        raise bad(f"has a sentinel address {item!r} that is not host[:port]")
    return host, int(port or SENTINEL_PORT)


class FollowPrimary(SentinelManagedConnection):
    """A Sentinel-managed connection that finds the primary however it is opened.

    redis-py's ``SentinelManagedConnection`` asks the sentinels in ``connect()`` only;
    a connection used directly (``send_command`` on a fresh one, as ``ScriptRunner``
    does) opens through ``connect_check_health()`` and would dial the default address.
    Routing that through ``connect()`` makes every (re)connection ask the sentinels.
    """

    _resolving = False

    def connect_check_health(self, check_health: bool = True,
                             retry_socket_connect: bool = True) -> None:
        if self._sock is not None or self._resolving:
            super().connect_check_health(check_health, retry_socket_connect)
            return
        self._resolving = True
        try:
            self.connect()  # type: ignore[no-untyped-call]  # -> the sentinels' primary -> connect_to -> here, resolved
        finally:
            self._resolving = False


class FollowPrimarySSL(FollowPrimary, ForkSafeSSLConnection):
    pass


class AskEachSentinel(Sentinel):
    """redis-py's ``Sentinel`` whose "no primary found" names each sentinel's own answer.

    redis-py's message lists each failed sentinel as the repr of its client and the class
    of its error, which hides the cause an operator needs (a refused certificate, a wrong
    password, a service name no sentinel knows).
    """

    def discover_master(self, service_name: str) -> tuple[str, int]:
        answers = []
        for number, node in enumerate(self.sentinels):
            where = "{host}:{port}".format(**node.connection_pool.connection_kwargs)
            try:
                masters: dict[str, Any] = node.sentinel_masters()  # type: ignore[assignment]
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                answers.append(f"sentinel {where}: {exc}")
                continue
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):  # type: ignore[no-untyped-call]
                self.sentinels[0], self.sentinels[number] = node, self.sentinels[0]
                return state["ip"], state["port"]
            answers.append(f"sentinel {where}: knows no healthy primary named {service_name!r}")
        raise MasterNotFoundError(f"no primary found for {service_name!r} ({'; '.join(answers)})")


def _sentinel_client(url: str, settings: RedisSettings, kwargs: dict[str, Any]) -> redis.Redis:
    target = parse_sentinel_url(url)
    tls = tls_options(url, settings)
    # The sentinels: short timeouts, each asked once per lookup (the data connection's
    # retry policy repeats the lookup), TLS as the data nodes, and their own password.
    to_sentinels: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": RedisRetry(NoBackoff(), 0),
        **tls,
    }
    if tls:
        to_sentinels["ssl"] = True
    sentinel_password = read_sentinel_password(settings)
    if sentinel_password is not None:
        to_sentinels["password"] = sentinel_password
    nodes = dict(kwargs, db=target.db, connection_class=FollowPrimarySSL if tls else FollowPrimary)
    if target.username:
        nodes["username"] = target.username
    if target.password is not None:
        nodes["password"] = target.password
    sentinel = AskEachSentinel(target.sentinels, sentinel_kwargs=to_sentinels)
    if tls:
        for node in sentinel.sentinels:  # redis.Redis(ssl=True) takes no connection class
            node.connection_pool.connection_class = ForkSafeSSLConnection
    client: redis.Redis = sentinel.master_for(target.service, **nodes)
    return client


class FollowSlotOwnerSSL(FollowSlotOwner, ForkSafeSSLConnection):
    @property
    def _ssl(self) -> bool:
        return True

    def _owner(self) -> tuple[str, int]:
        with _tls_lock:  # the lookup's TLS handshakes too (see ForkSafeSSLConnection)
            return super()._owner()


def _cluster_client(url: str, settings: RedisSettings, kwargs: dict[str, Any],
                    max_connections: int | None) -> redis.Redis:
    """A client whose connections go to the primary serving the namespace's slot."""
    target = parse_cluster_url(url, redact(url))
    tls = scheme_of(url) == "rediss+cluster"
    node = dict(kwargs, nodes=target.nodes, slot=namespace_slot(settings.namespace),
                host=target.nodes[0][0], port=target.nodes[0][1],
                connection_class=FollowSlotOwnerSSL if tls else FollowSlotOwner)
    if target.username:
        node["username"] = target.username
    if target.password is not None:
        node["password"] = target.password
    pool: redis.ConnectionPool
    if max_connections:
        pool = redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]
            max_connections=max_connections, timeout=settings.socket_timeout, **node)
    else:
        pool = redis.ConnectionPool(**node)
    return redis.Redis(connection_pool=pool)


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
    if scheme_of(url) in _TLS_SCHEMES and any(s in detail for s in (
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
