"""The chaos workload: a short CPU-bound job that records its side effect in a ledger.

Listed in the chaos supervisors' ``[worker].modules``. The ledger lives on a Redis the
faults never touch (its URL is an argument), so it survives whatever happens to the job
server. Each execution adds the job id to ``<key>:done`` (idempotent: a set) and counts
itself in ``<key>:runs`` (one increment per execution, so a second execution shows),
and notes the wall time of its first execution in ``<key>:first``.
The write sits in the middle of the work: a kill after it and before the outcome is
written is exactly the case that makes an at-least-once system run a job twice.
"""

from __future__ import annotations

import os
import time

import redis

import jobs
from jobs import job

_clients: dict[tuple[int, str], redis.Redis] = {}


def _ledger(url: str) -> redis.Redis:
    """One connection per process (children are forked: never reuse the parent's)."""
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        client = redis.Redis.from_url(url, socket_timeout=10)
        _clients[key] = client
    return client


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1


@job
def record(ledger_url: str, key: str, work_ms: float = 4.0, pad: str = "") -> int:
    """Work ``work_ms`` (half before the ledger write, half after); returns the attempt."""
    ctx = jobs.current()
    _spin(work_ms / 2000.0)
    pipe = _ledger(ledger_url).pipeline(transaction=True)
    pipe.sadd(f"{key}:done", ctx.job_id)
    pipe.hincrby(f"{key}:runs", ctx.job_id, 1)
    pipe.zadd(f"{key}:first", {ctx.job_id: time.time()}, nx=True)
    pipe.execute()
    _spin(work_ms / 2000.0)
    return ctx.attempt
