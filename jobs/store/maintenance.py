"""What supervisors run on a timer: promotion, reclaim listings, sweeps, counters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobs.records import ExpiredLease, errors_or_none, spec_or_none
from jobs.store.broker_state import BrokerState
from jobs.store.connection import translated
from jobs.store.layouts import AGE, EXPIRED, PROMOTE, RELEASE_LIMITS, TRIM


class Maintenance(BrokerState):
    """A mixin of ``Broker``."""

    def trim(self, queue: str) -> None:
        """Sweep a queue's finished indexes of expired entries (maintenance)."""
        k = self.keys
        d = self.defaults
        keys = TRIM.keys(completed=k.completed(queue), dead=k.dead(queue),
                         canceled=k.canceled(queue))
        args = TRIM.args(prefix=self.prefix, dead_ttl_ms=int(d.dead_ttl * 1000),
                         max_completed=d.max_completed, max_dead=d.max_dead)
        with translated(self.url):
            self.scripts.trim(keys=keys, args=args)

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
        each: list[str] = []
        for q in queues:
            each += PROMOTE.key_item(scheduled=self.keys.scheduled(q), queued=self.keys.queued(q),
                                     wake_list=self.keys.wake(q))
        keys = PROMOTE.keys(each, sequence=self.keys.seq(), limits_due=self.keys.limits_due())
        with translated(self.url):
            moved, next_ms = self.scripts.promote(keys=keys,
                                                  args=PROMOTE.args(prefix=self.prefix, most=limit))
        return int(moved), (None if int(next_ms) < 0 else int(next_ms) / 1000.0)

    def age(self, queues: Sequence[str], after: float, step: int, limit: int = 100) -> int:
        """Starvation guard: each ``after`` seconds queued adds ``step`` to a job's priority."""
        if not queues:
            return 0
        each: list[str] = []
        for q in queues:
            each += AGE.key_item(queued=self.keys.queued(q))
        keys = AGE.keys(each)
        args = AGE.args(prefix=self.prefix, age_ms=int(after * 1000), step=step, most=limit)
        with translated(self.url):
            return int(self.scripts.age(keys=keys, args=args))

    def release_limits(self) -> tuple[int, float | None]:
        """Give held jobs of due limits their turn; (released, seconds until the next)."""
        with translated(self.url):
            moved, next_ms = self.scripts.release_limits(
                keys=RELEASE_LIMITS.keys(limits_due=self.keys.limits_due()),
                args=RELEASE_LIMITS.args(prefix=self.prefix))
        return int(moved), (None if int(next_ms) < 0 else int(next_ms) / 1000.0)

    def wait_for_timers(self, timeout: float) -> None:
        """Block until a newly scheduled job may be due sooner, or ``timeout`` passes."""
        wait = max(0.01, min(timeout, self.settings.socket_timeout * 0.6))
        with translated(self.url):
            self.client.blpop([self.keys.timers()], timeout=wait)

    def expired(self, queues: Sequence[str], limit: int = 500) -> list[ExpiredLease]:
        each: list[str] = []
        for q in queues:
            each += EXPIRED.key_item(active=self.keys.active(q))
        keys = EXPIRED.keys(each)
        with translated(self.url):
            flat = self.scripts.expired(keys=keys, args=EXPIRED.args(prefix=self.prefix,
                                                                     most=limit))
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
