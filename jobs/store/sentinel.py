"""Sentinel: ``redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/service[/db]``.

``rediss+sentinel://`` speaks TLS to the sentinels and to the data nodes. The user and
password in the URL are those of the primary and replicas; the sentinels' own password,
if they have one, comes from ``JOBVISOR_REDIS_SENTINEL_PASSWORD`` or
``redis.sentinel_password_file``. A client asks the sentinels for the primary on every
new connection, so after a failover it reconnects to the promoted replica.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from urllib.parse import unquote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry as RedisRetry
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
)

from jobs.errors import ConfigurationError
from jobs.settings import RedisSettings
from jobs.store.tls import ForkSafeSSLConnection, tls_options
from jobs.store.urls import redact, split_hosts

SENTINEL_PORT = 26379


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

    split = split_hosts(url, SENTINEL_PORT, bad, "sentinel")
    service, _, db = split.path.strip("/").partition("/")
    if not service:
        raise bad("names no service (the name in `sentinel monitor <name> ...`)")
    if db and not db.isdigit():
        raise bad(f"has a database {db!r} that is not a number")
    return SentinelTarget(split.hosts, unquote(service), int(db or 0), split.username,
                          split.password)


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


class BoundedSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """A Sentinel pool that opens at most ``max_connections``: a thread that finds them
    all in use waits for one (up to ``timeout``), as with ``BlockingConnectionPool``.
    A connection to a primary that is no longer the primary is closed when it comes
    back, and its place reopens on the new one."""


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


def sentinel_client(url: str, settings: RedisSettings, kwargs: dict[str, Any],
                    sentinel_password: str | None,
                    max_connections: int | None = None) -> redis.Redis:
    """A client whose every connection asks the sentinels for the primary; ``kwargs``: the
    data connections' arguments, ``sentinel_password``: the sentinels' own,
    ``max_connections``: the bound of its pool (None: as many as its threads use)."""
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
    if max_connections:
        nodes.update(connection_pool_class=BoundedSentinelPool, max_connections=max_connections,
                     timeout=settings.socket_timeout)
    client: redis.Redis = sentinel.master_for(target.service, **nodes)
    return client
