"""What the failover tests (Sentinel, Cluster) share: a careful producer, and the audit
after the failover of every job that exists."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, NamedTuple

import redis

from jobs import Broker, BrokerError, BrokerUnavailable, Queue
from tests.helpers import assert_consistent, wait_until


class Producer(threading.Thread):
    """Enqueues one job at a time under its own ids, resending an id until acknowledged
    (enqueue with a custom id is idempotent), as a careful producer does in a failover."""

    def __init__(self, broker: Broker, call: tuple[Any, ...]) -> None:
        super().__init__(daemon=True)
        self.queue = Queue("default", broker)
        self.call = call  # the function and its arguments
        self.acked: list[tuple[str, float]] = []
        self.errors: Counter[str] = Counter()
        self.halt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            job_id = f"p2-{i}"
            try:
                self.queue.options(job_id=job_id).enqueue(*self.call)
            except (BrokerUnavailable, BrokerError) as exc:
                self.errors[type(exc).__name__] += 1
                self.halt.wait(0.05)
                continue
            self.acked.append((job_id, time.monotonic()))
            i += 1
            self.halt.wait(0.01)


class Audit(NamedTuple):
    acked: list[str]  # the producer's enqueues it saw succeed
    lost: set[str]  # of those, the ones the new primary does not have
    expected: list[str]  # every job that exists: all must end completed
    states: Counter[str]
    runs: dict[str, int]  # executions per job, from the ledger
    attempts: Counter[int]


def wind_down_and_audit(broker: Broker, producer: Producer, first: list[str],
                        call: tuple[Any, ...], ledger: redis.Redis, key: str,
                        timeout: float) -> Audit:
    """Stop the producer, enqueue 50 more jobs after the failover, wait for every job that
    exists to complete, and read each one's state, executions and attempts."""
    producer.halt.wait(1.0)
    producer.halt.set()
    producer.join(10)
    third = [j.id for j in Queue("default", broker).enqueue_many([call] * 50)]
    acked = [job_id for job_id, _ in producer.acked]
    present = broker.jobs.exist(acked)
    lost = {j for j, there in zip(acked, present, strict=True) if not there}
    expected = first + [j for j, there in zip(acked, present, strict=True) if there] + third

    def settled() -> bool:
        c = broker.jobs.counts("default", ["queued", "active", "scheduled", "completed"])
        return c["completed"] >= len(expected) and not (c["queued"] or c["active"]
                                                        or c["scheduled"])

    wait_until(settled, timeout=timeout, interval=0.05, what="every job to complete")
    states = Counter(assert_consistent(broker, j, "default") for j in expected)
    runs = {k.decode(): int(v) for k, v in ledger.hgetall(f"{key}:runs").items()}
    records = broker.jobs.fetch_many(expected)
    attempts = Counter(int(r.get(b"att", 0) or 0) for r in records)
    return Audit(acked, lost, expected, states, runs, attempts)
