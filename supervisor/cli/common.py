"""What every CLI command shares: config, the broker, output as text or JSON."""

from __future__ import annotations

import argparse
import difflib
import getpass
import json
import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil

import jobs
from jobs import Broker
from jobs.store.urls import embedded_url
from supervisor.config import Config, config_path, load_config
from supervisor.errors import ConfigError


def load(args: argparse.Namespace) -> tuple[Config, str | None]:
    path = config_path(args.config)
    return load_config(path), str(path) if path else None


def broker_for(config: Config) -> Broker:
    """The broker the supervisor of this config uses (same URL rules as ``jobvisor run``).

    A command tries each Redis call once: ``redis.socket_timeout`` then bounds how long a
    command waits for a server that does not answer (retries would multiply it).
    """
    url = config.redis.url or os.environ.get("JOBVISOR_REDIS_URL") or embedded_url(
        config.supervisor.data_dir)
    return jobs.connect(url, redis_settings=config.redis, defaults=config.defaults, retries=0,
                        encryption=config.encryption)


def connect(args: argparse.Namespace) -> Broker:
    return broker_for(load(args)[0])


def output(args: argparse.Namespace, data: Any, text: Callable[[Any], str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, default=str))
    else:
        print(text(data))


def local_pid(config: Config) -> int:
    """The pid of the supervisor of this config on this host, from its pid file."""
    pidfile = Path(config.supervisor.data_dir) / "jobvisor.pid"
    try:
        pid = int(pidfile.read_text().strip())
        # A stale file may name a reused pid: only a jobvisor process counts.
        seen = " ".join(psutil.Process(pid).cmdline())
        if "jobvisor" not in seen and "supervisor" not in seen:
            raise ValueError(pid)
    except (OSError, ValueError, psutil.Error):
        raise ConfigError(
            f"no running supervisor found through {pidfile}: start one with `jobvisor run`, "
            "or give --host ID (see `jobvisor hosts`)"
        ) from None
    return pid


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, else nothing."""
    near = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def actor() -> str:
    """Who acts, for the audit trail of bulk actions: ``cli:<user>@<host>``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        user = f"uid{os.getuid()}"
    return f"cli:{user}@{socket.gethostname()}"


def local_ident(config: Config) -> str:
    return f"{socket.gethostname()}:{local_pid(config)}"


def ago(ts: float | None) -> str:
    if not ts:
        return "-"
    return duration(time.time() - ts) + " ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def backoff_text(b: dict[str, Any]) -> str:
    """A backoff as people read it: ``exponential 1s x2 (cap 3600s, jitter 10%)``."""
    kind, base = b.get("kind", "exponential"), b.get("base", 1.0)
    step = {"fixed": f"{base:g}s", "linear": f"{base:g}s x attempt"}.get(
        kind, f"{base:g}s x{b.get('factor', 2.0):g} per attempt")
    return (f"{kind} {step} (cap {b.get('cap', 3600.0):g}s, "
            f"jitter {b.get('jitter', 0.0) * 100:g}%)")
