"""Redis URLs: where the embedded server listens, which URL applies, its scheme, the
form with its password hidden, and the host lists of Sentinel and Cluster URLs."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote

from jobs.errors import ConfigurationError
from jobs.settings import RedisSettings

SOCKET_NAME = "valkey.sock"
DEFAULT_DATA_DIR = "./var"
TLS_SCHEMES = ("rediss", "rediss+sentinel", "rediss+cluster")
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


class HostsUrl(NamedTuple):
    """``scheme://[user[:password]@]host[:port][,host[:port]...][/path]``, split."""

    hosts: list[tuple[str, int]]
    username: str | None
    password: str | None
    path: str


def split_hosts(url: str, default_port: int, bad: Callable[[str], ConfigurationError],
                address: str) -> HostsUrl:
    """Split a URL naming several hosts (Sentinel, Cluster); ``bad`` makes the error for a
    problem, ``address`` names what a host is ("sentinel", "node") in it."""
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
    hosts = [_host_port(item, default_port, bad, address) for item in hostlist.split(",")]
    return HostsUrl(hosts, username, password, path)


def _host_port(item: str, default_port: int, bad: Callable[[str], ConfigurationError],
               address: str) -> tuple[str, int]:
    host, port = item, ""
    if item.startswith("["):  # [IPv6]:port
        host, _, port = item[1:].partition("]")
        port = port.removeprefix(":")
    elif ":" in item:
        host, _, port = item.rpartition(":")
    if not host or (port and not port.isdigit()) or (port and not 0 < int(port) < 65536):
        raise bad(f"has a {address} address {item!r} that is not host[:port]")
    return host, int(port or default_port)
