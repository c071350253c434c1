"""The benchmark's own server and supervisors (the same parts users run), and the clock
and JSON helpers every benchmark shares."""

from __future__ import annotations

import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil

from jobs import Broker, RedisSettings
from tests.helpers import wait_until
from tests.server import ValkeyServer

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


class Bench:
    """A server in a temp dir, plus helpers to start supervisors against it."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="jobvisor-bench-"))
        self.server = ValkeyServer(self.tmp / "server")
        self.server.start()
        self._ns = 0
        self.sups: list[subprocess.Popen[bytes]] = []

    def broker(self, namespace: str | None = None) -> Broker:
        self._ns += 1
        ns = namespace or f"b{self._ns}"
        return Broker(self.server.url, redis_settings=RedisSettings(namespace=ns))

    def supervisor(self, broker: Broker, workers: int = 2, extra: str = "",
                   name: str = "s", worker: str = "", wait: bool = True,
                   url: str | None = None) -> subprocess.Popen[bytes]:
        """A supervisor on this server (or on ``url``); ``wait``: return once its workers
        are idle."""
        d = self.tmp / f"{name}{len(self.sups)}"
        d.mkdir()
        cfg = d / "config.toml"
        cfg.write_text(
            f'[redis]\nurl = "{url or self.server.url}"\nnamespace = "{broker.keys.ns}"\n'
            f'[supervisor]\nworkers = {workers}\ndata_dir = "{d / "var"}"\n{extra}\n'
            f'[worker]\nmodules = ["examples.cpu", "bench.jobs"]\n{worker}\n')
        proc = subprocess.Popen([sys.executable, "-m", "supervisor", "--config", str(cfg), "run",
                                 "--log-file", str(d / "log")], cwd=ROOT)
        self.sups.append(proc)
        if wait:
            wait_for(lambda: idle_workers(proc) == workers, 30)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        for p in self.sups:
            self.stop(p)
        self.server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def children(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """Live children (a worker that just exited is a zombie until it is reaped)."""
    try:
        kids = psutil.Process(proc.pid).children()
    except psutil.NoSuchProcess:
        return []
    return [c for c in kids if _alive(c)]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def idle_workers(proc: subprocess.Popen[bytes]) -> int:
    """Workers whose title says idle, or -1 while anything else runs under the supervisor.

    One listing, read once: a helper process the supervisor runs while it boots (a
    library probing the platform) must not pass for a worker, nor its exit for "all idle".
    """
    titles = []
    for c in children(proc):
        try:
            titles.append(" ".join(c.cmdline()))
        except psutil.Error:  # it exited between the listing and the read: look again
            return -1
    if not all(t.startswith("jobvisor: worker idle") for t in titles):
        return -1
    return len(titles)


wait_for = wait_until  # the same bounded wait the tests use


def server_time(broker: Broker) -> float:
    s, us = broker.client.time()
    return float(s) + float(us) / 1e6


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total



def clocked(run: Callable[[], T]) -> tuple[T, float, float]:
    """``run()``'s value, with the wall-clock and this process's CPU seconds it took."""
    start, cpu = time.perf_counter(), time.process_time()
    value = run()
    return value, time.perf_counter() - start, time.process_time() - cpu


def timed(run: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Median and max of ``repeats`` runs after an untimed first one (its time kept), and
    the last run's value (``last``)."""
    last, first, _ = clocked(run)
    times = []
    for _ in range(repeats):
        last, took, _ = clocked(run)
        times.append(took)
    return {"median_ms": statistics.median(times) * 1000, "max_ms": max(times) * 1000,
            "first_ms": first * 1000, "last": last}


def write_json(path: str | Path, data: Any) -> Path:
    """``data`` as indented JSON at ``path``, its folder made if need be."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2))
    return out
