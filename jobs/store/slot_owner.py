"""A Redis/Valkey Cluster, reached through the one node that serves a namespace's slot.

On a cluster every key of a namespace carries the hash tag ``{namespace}``
(``jobs.store.keys``), so all of them, and every script's keys, live in one hash slot,
served by one primary. A connection asks the cluster which primary serves that slot
each time it connects, and connects there; a reply saying the slot is served elsewhere
(MOVED, ASK) or by nobody yet (CLUSTERDOWN, TRYAGAIN: a failover under way) means the
command did not run: the connection is dropped and the error raised as a lost
connection, so the client's retries ask the cluster again and send it to the new owner.

URL: ``redis+cluster://[user[:password]@]host[:port][,host[:port]...]`` (the port defaults
to 6379; ``rediss+cluster://`` speaks TLS): some nodes of the cluster, any of them; the
others are learned from their answers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError
from redis.retry import Retry

from jobs.errors import ConfigurationError
from jobs.settings import RedisSettings
from jobs.store.tls import ForkSafeSSLConnection, handshake_lock
from jobs.store.urls import redact, scheme_of, split_hosts

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_PORT = 6379
_ELSEWHERE = (MovedError, AskError, ClusterDownError, TryAgainError)


def is_cluster_url(url: str) -> bool:
    return scheme_of(url) in CLUSTER_SCHEMES


def namespace_slot(namespace: str) -> int:
    """The hash slot every key of ``namespace`` lives in on a cluster."""
    return int(key_slot(f"{{{namespace}}}".encode()))


class ClusterTarget(NamedTuple):
    nodes: list[tuple[str, int]]
    username: str | None
    password: str | None


def parse_cluster_url(url: str) -> ClusterTarget:
    """Split ``redis+cluster://[user[:password]@]host[:port][,host[:port]...]``."""
    def bad(problem: str) -> ConfigurationError:
        return ConfigurationError(
            f"cluster URL {redact(url)!r} {problem}; expected "
            "redis+cluster://[user[:password]@]host[:port][,host[:port]...]")

    split = split_hosts(url, DEFAULT_PORT, bad, "node")
    if split.path.strip("/") not in ("", "0"):
        raise bad("names a database: a cluster has only database 0")
    return ClusterTarget(split.hosts, split.username, split.password)


class FollowSlotOwner(redis.Connection):
    """A connection to the primary serving ``slot``, looked up on each connect."""

    def __init__(self, *, nodes: list[tuple[str, int]], slot: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.known = list(nodes)  # the URL's nodes, then those their answers named
        self.slot = slot
        self._ask = {k: v for k, v in kwargs.items()
                     if k in ("username", "password", "socket_timeout",
                              "socket_connect_timeout") or k.startswith("ssl")}

    def connect_check_health(self, check_health: bool = True,
                             retry_socket_connect: bool = True) -> None:
        if self._sock is None:
            self.host, self.port = self._owner()
        super().connect_check_health(check_health, retry_socket_connect)

    def _owner(self) -> tuple[str, int]:
        """Ask the known nodes, in turn, which primary serves the slot."""
        answers = []
        for host, port in list(self.known):
            node = redis.Redis(host=host, port=port, ssl=self._ssl,
                               retry=Retry(NoBackoff(), 0), **self._ask)
            try:
                ranges = node.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
            except redis.RedisError as exc:
                answers.append(f"{host}:{port}: {exc}")
                continue
            finally:
                node.close()
            owner = None
            for start, end, primary, *replicas in ranges:
                for entry in (primary, *replicas):
                    address = (_text(entry[0]) or host, int(entry[1]))
                    if address not in self.known:
                        self.known.append(address)
                if int(start) <= self.slot <= int(end):
                    owner = (_text(primary[0]) or host, int(primary[1]))
            if owner is not None:
                # Asked first next time: a node that is down (its host gone) costs a
                # connect timeout each time it is tried before the others.
                self.known.remove((host, port))
                self.known.insert(0, (host, port))
                return owner
            answers.append(f"{host}:{port}: no primary serves slot {self.slot}")
        raise redis.ConnectionError(
            f"no node of the cluster named the primary of slot {self.slot} "
            f"({'; '.join(answers)})")

    @property
    def _ssl(self) -> bool:
        return False

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except _ELSEWHERE as exc:
            # The command did not run: the slot is served elsewhere, or not yet.
            self.disconnect()  # type: ignore[no-untyped-call]
            raise redis.ConnectionError(
                f"slot {self.slot} is not served by {self.host}:{self.port} now "
                f"({type(exc).__name__}: {exc}); asking the cluster again") from exc


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class FollowSlotOwnerSSL(FollowSlotOwner, ForkSafeSSLConnection):
    """``FollowSlotOwner`` over TLS; its lookups' handshakes under the fork lock too."""

    @property
    def _ssl(self) -> bool:
        return True

    def _owner(self) -> tuple[str, int]:
        with handshake_lock():
            return super()._owner()


def cluster_client(url: str, settings: RedisSettings, kwargs: dict[str, Any],
                    max_connections: int | None) -> redis.Redis:
    """A client whose connections go to the primary serving the namespace's slot."""
    target = parse_cluster_url(url)
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
