"""Queue statistics: counts per state, recent outcomes, throughput and waiting time."""

from __future__ import annotations

import time
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


def as_dict(stats: QueueStats) -> dict[str, Any]:
    return msgspec.to_builtins(stats)  # type: ignore[no-any-return]
