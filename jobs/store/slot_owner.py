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
from urllib.parse import unquote

import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError
from redis.retry import Retry

from jobs.errors import ConfigurationError

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_PORT = 6379
_ELSEWHERE = (MovedError, AskError, ClusterDownError, TryAgainError)


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def namespace_slot(namespace: str) -> int:
    """The hash slot every key of ``namespace`` lives in on a cluster."""
    return int(key_slot(f"{{{namespace}}}".encode()))


class ClusterTarget(NamedTuple):
    nodes: list[tuple[str, int]]
    username: str | None
    password: str | None


def parse_cluster_url(url: str, shown: str) -> ClusterTarget:
    """Split ``redis+cluster://[user[:password]@]host[:port][,host[:port]...]``; ``shown``
    is the URL with its password hidden, for messages."""
    def bad(problem: str) -> ConfigurationError:
        return ConfigurationError(
            f"cluster URL {shown!r} {problem}; expected "
            "redis+cluster://[user[:password]@]host[:port][,host[:port]...]")

    rest = url.split("://", 1)[1]
    if "?" in rest or "#" in rest:
        raise bad("takes no query parameters (set options in [redis])")
    authority, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise bad("names a database: a cluster has only database 0")
    userinfo, at, hostlist = authority.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    return ClusterTarget([_host_port(item, bad) for item in hostlist.split(",")],
                         username, password)


def _host_port(item: str, bad: Any) -> tuple[str, int]:
    host, port = item, ""
    if item.startswith("["):  # [IPv6]:port
        host, _, port = item[1:].partition("]")
        port = port.removeprefix(":")
    elif ":" in item:
        host, _, port = item.rpartition(":")
    if not host or (port and not port.isdigit()) or (port and not 0 < int(port) < 65536):
        raise bad(f"has a node address {item!r} that is not host[:port]")
    return host, int(port or DEFAULT_PORT)


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
