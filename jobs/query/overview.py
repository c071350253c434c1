"""The whole namespace at a glance: per-minute outcomes and the fleet's workers."""

from __future__ import annotations

from typing import Any

import msgspec

from jobs.cluster import supervisors
from jobs.stats import OUTCOMES
from jobs.store.broker import Broker
from jobs.store.connection import translated
from jobs.timeseries import minute


class Series(msgspec.Struct, kw_only=True):
    """Outcomes per minute, oldest first; ``minutes`` are epoch seconds of each start."""

    minutes: list[int]
    counts: dict[str, list[int]]  # outcome -> one count per minute


class Fleet(msgspec.Struct, kw_only=True):
    supervisors: int
    workers: int
    busy: int
    idle: int


def minute_series(broker: Broker, minutes: int = 60, queue: str | None = None,
                  now: float | None = None) -> Series:
    """Completed, retried, dead and canceled jobs per minute (one queue or all of them),
    from the per-minute counters the outcome scripts keep."""
    current = minute(now)
    starts = list(range(current - minutes + 1, current + 1))
    with translated(broker.url):
        pipe = broker.client.pipeline(transaction=False)
        for m in starts:
            pipe.hgetall(broker.keys.stats(m))
        hashes = pipe.execute()
    counts: dict[str, list[int]] = {o: [0] * len(starts) for o in OUTCOMES}
    for i, fields in enumerate(hashes):
        for raw_key, raw_value in fields.items():
            q, _, outcome = raw_key.decode().rpartition("|")
            if q.startswith("fn|") or outcome not in counts:
                continue  # per-function counts and duration buckets
            if queue is None or q == queue:
                counts[outcome][i] += int(raw_value)
    return Series(minutes=[m * 60 for m in starts], counts=counts)


def fleet(entries: list[dict[str, Any]] | None = None, broker: Broker | None = None) -> Fleet:
    """How many supervisors and workers are live, and how many workers are busy."""
    found = entries if entries is not None else supervisors(broker)
    workers = [w for e in found for w in e.get("workers", ())]
    busy = sum(1 for w in workers if w.get("state") == "busy")
    return Fleet(supervisors=len(found), workers=len(workers), busy=busy,
                 idle=len(workers) - busy)
