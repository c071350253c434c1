"""Huey, the fastest Python peer, against the same server in the same run.

Each figure is taken the way jobvisor's is (``bench.scenarios``), one right after the
other: a queue filled while nobody can run it, then released to two worker processes
and timed until it is empty; and one process enqueueing a no-op one call at a time.
Huey runs as its users run it: ``huey_consumer`` with two worker processes, Redis
storage with blocking reads, its default serializer, results for non-None returns.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import redis

from bench import scenarios
from bench.env import ROOT, Bench, wait_for

WORKERS = 2


def available() -> bool:
    """Whether Huey is installed (``pip install -c constraints.txt -e '.[test]'``)."""
    try:
        import huey  # noqa: F401
    except ImportError:
        return False
    return True


def _environment(b: Bench, name: str) -> dict[str, str]:
    return {**os.environ, "JOBVISOR_BENCH_HUEY_URL": b.server.url,
            "JOBVISOR_BENCH_HUEY_NAME": name}


def _huey(b: Bench) -> tuple[str, Any, Any]:
    """A fresh Huey instance for one figure: its name, the instance, its no-op task."""
    from bench.huey_tasks import build

    name = f"peer{time.monotonic_ns()}"
    return (name, *build(b.server.url, name))


def huey_throughput(b: Bench, n: int) -> float:
    """Jobs/s for Huey's consumer draining ``n`` queued no-op tasks. The tasks are
    written under another key while its workers wait, then renamed into its queue in one
    step (which wakes their blocking reads), and the clock runs until the queue is empty
    and every worker is back in its blocking read."""
    name, huey, noop = _huey(b)
    queue_key = huey.storage.queue_key
    client = redis.Redis.from_url(b.server.url)
    consumer = subprocess.Popen(
        [sys.executable, "-m", "huey.bin.huey_consumer", "bench.huey_tasks.huey", "-k",
         "process", "-w", str(WORKERS), "-q"], cwd=ROOT, env=_environment(b, name),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _blocked(client) >= WORKERS, 60, 0.01)
        staging = f"{queue_key}:staging"
        messages = [huey.serialize_task(noop.s()) for _ in range(n)]
        for start in range(0, n, 1000):
            client.lpush(staging, *messages[start:start + 1000])
        started = time.perf_counter()
        client.rename(staging, queue_key)
        wait_for(lambda: client.llen(queue_key) == 0 and _blocked(client) >= WORKERS, 600,
                 0.001)
        return n / (time.perf_counter() - started)
    finally:
        consumer.send_signal(signal.SIGTERM)
        try:
            consumer.wait(timeout=15)
        except subprocess.TimeoutExpired:
            consumer.kill()
            consumer.wait()


def _blocked(client: redis.Redis) -> int:
    """How many connections wait in a blocking read (Huey's idle workers: nothing else
    blocks on this benchmark's server while Huey runs)."""
    return sum(1 for c in client.client_list() if c.get("cmd") in ("brpop", "blpop"))


def huey_enqueue_one_by_one(b: Bench, n: int) -> float:
    """Jobs/s for one process calling a Huey task ``n`` times (each call enqueues it)."""
    _, _, noop = _huey(b)
    start = time.perf_counter()
    for _ in range(n):
        noop()
    return n / (time.perf_counter() - start)


def versus_huey(b: Bench, n: int, enqueues: int) -> dict[str, Any]:
    """jobvisor and Huey, each figure side by side in the same run."""
    ours = scenarios.throughput(b, n)
    theirs = huey_throughput(b, n)
    ours_enqueue = scenarios.enqueue_one_by_one(b, enqueues)
    theirs_enqueue = huey_enqueue_one_by_one(b, enqueues)
    return {
        "jobvisor_jobs_per_s": ours["jobs_per_s"], "huey_jobs_per_s": theirs,
        "throughput_x_huey": ours["jobs_per_s"] / theirs,
        "jobvisor_enqueue_per_s": ours_enqueue["jobs_per_s"],
        "huey_enqueue_per_s": theirs_enqueue,
        "enqueue_x_huey": ours_enqueue["jobs_per_s"] / theirs_enqueue,
    }
