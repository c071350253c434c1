"""Queue statistics: counts per state, recent outcomes, throughput and waiting time; and
per function: recent outcomes and the average time an attempt took."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

from jobs.priority import PRIORITY_BAND
from jobs.queue import COUNTED_STATES
from jobs.store.broker import Broker, default_broker
from jobs.store.connection import translated
from jobs.timeseries import minute

OUTCOMES = ("completed", "retried", "dead", "canceled")


class QueueStats(msgspec.Struct, kw_only=True):
    queue: str
    queued: int  # those a rate or concurrency limit holds back included (as Queue.counts)
    held: int  # of the queued, those a limit holds back
    scheduled: int
    active: int
    waiting: int
    completed: int
    dead: int
    canceled: int
    paused: bool
    last_minute: dict[str, int]
    last_hour: dict[str, int]
    throughput: float  # completed jobs per second over the last minute
    oldest_queued_age: float | None  # seconds the longest-waiting queued job has waited


class FunctionStats(msgspec.Struct, kw_only=True):
    function: str
    last_minute: dict[str, int]
    last_hour: dict[str, int]
    # Mean run time of its attempts that ran (completed or failed) in the last hour.
    avg_seconds: float | None


def recent(broker: Broker, minutes: int, now: float | None = None) -> dict[str, int]:
    """Counter fields summed over the last ``minutes`` per-minute statistics hashes."""
    current = minute(now)
    with translated(broker.url):
        pipe = broker.client.pipeline(transaction=False)
        for m in range(current - minutes + 1, current + 1):
            pipe.hgetall(broker.keys.stats(m))
        hashes = pipe.execute()
    total: dict[str, int] = {}
    for h in hashes:
        for k, v in h.items():
            key = k.decode()
            total[key] = total.get(key, 0) + int(v)
    return total


def oldest_queued_age(broker: Broker, queue: str) -> float | None:
    """Age of the longest-waiting queued job: the head of each priority band is its oldest."""
    key = broker.keys.queued(queue)
    enqueued: list[float] = []
    low = "-inf"
    with translated(broker.url):
        for _ in range(64):  # at most this many distinct priorities are looked at
            head = broker.client.zrangebyscore(key, low, "+inf", start=0, num=1, withscores=True)
            if not head:
                break
            job_id, score = head[0]
            te = broker.client.hget(broker.keys.job(job_id.decode()), "te")
            if te:
                enqueued.append(int(te) / 1000)
            low = f"({(int(score) // PRIORITY_BAND + 1) * PRIORITY_BAND - 1}"
        server = broker.client.time()
    if not enqueued:
        return None
    return max(0.0, float(server[0]) + float(server[1]) / 1e6 - min(enqueued))


def queue_stats(broker: Broker | None = None, queues: list[str] | None = None) -> list[QueueStats]:
    b = broker or default_broker()
    names = queues if queues is not None else b.jobs.known_queues()
    # "Last minute" is the current clock minute plus the previous one: a sliding window
    # of 60-120 s, so a job finished a moment ago is never missing from it.
    minute_counts = recent(b, 2)
    hour_counts = recent(b, 60)
    with translated(b.url):
        paused = {q.decode() for q in b.client.smembers(b.keys.paused())}
        held = {q.decode(): int(n) for q, n in b.client.hgetall(b.keys.held()).items()}
    out = []
    for q in names:
        counts = b.jobs.counts(q, [s.value for s in COUNTED_STATES])
        counts["held"] = held.get(q, 0)
        counts["queued"] += counts["held"]
        last_minute = {o: minute_counts.get(f"{q}|{o}", 0) for o in OUTCOMES}
        # Throughput over the current partial minute and the one before it.
        seconds = 60 + time.time() % 60
        out.append(QueueStats(
            queue=q, paused=q in paused,
            last_minute=last_minute,
            last_hour={o: hour_counts.get(f"{q}|{o}", 0) for o in OUTCOMES},
            throughput=round(minute_counts.get(f"{q}|completed", 0) / seconds, 3),
            oldest_queued_age=oldest_queued_age(b, q),
            **counts,
        ))
    return out


def by_function(counts: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """Counter fields ``fn|<function>|<what>`` grouped by function; ``what`` is an
    outcome, ``enqueued``, ``dsum`` (milliseconds) or ``d|<bound>`` (a queue named ``fn``
    has fields of none of these shapes)."""
    out: dict[str, dict[str, int]] = {}
    for field, n in counts.items():
        parts = field.split("|", 2)
        if parts[0] == "fn" and len(parts) == 3 and (
                parts[2] in _FUNCTION_FIGURES or parts[2].startswith("d|")):
            out.setdefault(parts[1], {})[parts[2]] = n
    return out


_FUNCTION_FIGURES = frozenset((*OUTCOMES, "enqueued", "dsum"))


def function_stats(broker: Broker | None = None) -> list[FunctionStats]:
    """Every function with an outcome in the last hour, by name; its average from the
    per-minute duration counts (``dsum`` over its ``d|<bound>`` counts)."""
    b = broker or default_broker()
    minute = by_function(recent(b, 2))
    hour = by_function(recent(b, 60))
    out = []
    for name in sorted(n for n, f in hour.items() if any(o in f for o in OUTCOMES)):
        f, last = hour[name], minute.get(name, {})
        ran = sum(v for k, v in f.items() if k.startswith("d|"))  # attempts that ran
        out.append(FunctionStats(
            function=name,
            last_minute={o: last.get(o, 0) for o in OUTCOMES},
            last_hour={o: f.get(o, 0) for o in OUTCOMES},
            avg_seconds=round(f.get("dsum", 0) / 1000 / ran, 6) if ran else None))
    return out


def as_dict(stats: QueueStats | FunctionStats) -> dict[str, Any]:
    return msgspec.to_builtins(stats)  # type: ignore[no-any-return]
