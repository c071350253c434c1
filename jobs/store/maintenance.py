"""What supervisors run on a timer: promotion, reclaim listings, sweeps, counters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobs.records import ExpiredLease, errors_or_none, spec_or_none
from jobs.store.broker_state import BrokerState
from jobs.store.connection import translated


class Maintenance(BrokerState):
    """A mixin of ``Broker``."""

    def trim(self, queue: str) -> None:
        """Sweep a queue's finished indexes of expired entries (maintenance)."""
        k = self.keys
        d = self.defaults
        with translated(self.url):
            self.scripts.trim(keys=[k.completed(queue), k.dead(queue), k.canceled(queue)],
                              args=[self.prefix, int(d.dead_ttl * 1000), d.max_completed,
                                    d.max_dead])

    def add_counts(self, counts: dict[int, dict[str, int]]) -> None:
        """Add outcome counters (by minute) to the statistics hashes and to the totals."""
        with translated(self.url):
            pipe = self.client.pipeline(transaction=False)
            for command in self.count_commands(counts):
                pipe.execute_command(*command)
            pipe.execute()

    def count_commands(self, counts: dict[int, dict[str, int]]) -> list[tuple[Any, ...]]:
        """The commands that add ``counts``: each minute's hash is kept two hours, the
        totals for good (Prometheus counters must only grow)."""
        commands: list[tuple[Any, ...]] = []
        for m, fields in counts.items():
            minute_key = self.keys.stats(m)
            for key in (minute_key, self.keys.totals()):
                commands += [("HINCRBY", key, field, n) for field, n in fields.items()]
            commands.append(("EXPIRE", minute_key, 7200))
        return commands

    def known_queues(self) -> list[str]:
        with translated(self.url):
            return sorted(q.decode() for q in self.client.smembers(self.keys.queues()))

    def promote(self, queues: Sequence[str], limit: int = 1000) -> tuple[int, float | None]:
        """Queue due scheduled jobs and limit-held jobs whose turn came; return (moved,
        seconds until the next is due or None)."""
        keys: list[str] = []
        for q in queues:
            keys += [self.keys.scheduled(q), self.keys.queued(q), self.keys.wake(q)]
        keys += [self.keys.seq(), self.keys.limits_due()]
        with translated(self.url):
            moved, next_ms = self.scripts.promote(keys=keys, args=[self.prefix, limit])
        return int(moved), (None if int(next_ms) < 0 else int(next_ms) / 1000.0)

    def age(self, queues: Sequence[str], after: float, step: int, limit: int = 100) -> int:
        """Starvation guard: each ``after`` seconds queued adds ``step`` to a job's priority."""
        if not queues:
            return 0
        keys = [self.keys.queued(q) for q in queues]
        with translated(self.url):
            return int(self.scripts.age(keys=keys, args=[self.prefix, int(after * 1000), step,
                                                         limit]))

    def release_limits(self) -> tuple[int, float | None]:
        """Give held jobs of due limits their turn; (released, seconds until the next)."""
        with translated(self.url):
            moved, next_ms = self.scripts.release_limits(keys=[self.keys.limits_due()],
                                                 args=[self.prefix])
        return int(moved), (None if int(next_ms) < 0 else int(next_ms) / 1000.0)

    def wait_for_timers(self, timeout: float) -> None:
        """Block until a newly scheduled job may be due sooner, or ``timeout`` passes."""
        wait = max(0.01, min(timeout, self.settings.socket_timeout * 0.6))
        with translated(self.url):
            self.client.blpop([self.keys.timers()], timeout=wait)

    def expired(self, queues: Sequence[str], limit: int = 500) -> list[ExpiredLease]:
        keys = [self.keys.active(q) for q in queues]
        with translated(self.url):
            flat = self.scripts.expired(keys=keys, args=[self.prefix, limit])
        out = []
        for i in range(0, len(flat), 6):
            pos, job_id, token, attempts, spec, errs = flat[i : i + 6]
            out.append(
                ExpiredLease(
                    id=job_id.decode(),
                    queue=queues[int(pos) - 1],
                    token=token.decode() if token else "",
                    attempts=int(attempts),
                    spec=spec_or_none(spec),
                    errors=errors_or_none(errs),
                )
            )
        return out
