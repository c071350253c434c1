"""What supervisors run on a timer: promotion, reclaim listings, sweeps, counters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from jobs.records import ExpiredLease, errors_or_none, spec_or_none
from jobs.store.connection import translated
from jobs.store.keys import Keys
from jobs.store.layouts import AGE, EXPIRED, PROMOTE, RELEASE_LIMITS, TRIM
from jobs.store.store import Store


class Maintenance:
    """``broker.maintenance``: the supervisors' timed duties (any supervisor may run
    them, the scripts make it safe) and the outcome counters workers flush."""

    def __init__(self, store: Store) -> None:
        self.store: Final = store

    def trim(self, queue: str) -> None:
        """Sweep a queue's finished indexes of expired entries."""
        s = self.store
        k = s.keys
        d = s.defaults
        keys = TRIM.keys(completed=k.completed(queue), dead=k.dead(queue),
                         canceled=k.canceled(queue))
        args = TRIM.args(prefix=s.prefix, dead_ttl_ms=int(d.dead_ttl * 1000),
                         max_completed=d.max_completed, max_dead=d.max_dead)
        with translated(s.url):
            s.scripts.trim(keys=keys, args=args)

    def add_counts(self, counts: dict[int, dict[str, int]]) -> None:
        """Add outcome counters (by minute) to the statistics hashes and to the totals."""
        s = self.store
        with translated(s.url):
            # MULTI/EXEC: a write cut off part-way is dropped whole, so its retry (redis-py
            # resends the pipeline after a lost connection) counts nothing twice.
            pipe = s.client.pipeline(transaction=True)
            for command in count_commands(s.keys, counts):
                pipe.execute_command(*command)
            pipe.execute()

    def promote(self, queues: Sequence[str], limit: int = 1000) -> tuple[int, float | None]:
        """Queue due scheduled jobs and limit-held jobs whose turn came; return (moved,
        seconds until the next is due or None)."""
        s = self.store
        each: list[str] = []
        for q in queues:
            each += PROMOTE.key_item(scheduled=s.keys.scheduled(q), queued=s.keys.queued(q),
                                     wake_list=s.keys.wake(q))
        keys = PROMOTE.keys(each, sequence=s.keys.seq(), limits_due=s.keys.limits_due())
        with translated(s.url):
            moved, next_ms = s.scripts.promote(keys=keys,
                                               args=PROMOTE.args(prefix=s.prefix, most=limit))
        return int(moved), (None if int(next_ms) < 0 else int(next_ms) / 1000.0)

    def age(self, queues: Sequence[str], after: float, step: int, limit: int = 100) -> int:
        """Starvation guard: each ``after`` seconds queued adds ``step`` to a job's priority."""
        s = self.store
        if not queues:
            return 0
        each: list[str] = []
        for q in queues:
            each += AGE.key_item(queued=s.keys.queued(q))
        keys = AGE.keys(each)
        args = AGE.args(prefix=s.prefix, age_ms=int(after * 1000), step=step, most=limit)
        with translated(s.url):
            return int(s.scripts.age(keys=keys, args=args))

    def release_limits(self) -> tuple[int, float | None]:
        """Give held jobs of due limits their turn; (released, seconds until the next)."""
        s = self.store
        with translated(s.url):
            moved, next_ms = s.scripts.release_limits(
                keys=RELEASE_LIMITS.keys(limits_due=s.keys.limits_due()),
                args=RELEASE_LIMITS.args(prefix=s.prefix))
        return int(moved), (None if int(next_ms) < 0 else int(next_ms) / 1000.0)

    def wait_for_timers(self, timeout: float) -> None:
        """Block until a newly scheduled job may be due sooner, or ``timeout`` passes."""
        s = self.store
        wait = max(0.01, min(timeout, s.settings.socket_timeout * 0.6))
        with translated(s.url):
            s.client.blpop([s.keys.timers()], timeout=wait)

    def expired(self, queues: Sequence[str], limit: int = 500) -> list[ExpiredLease]:
        s = self.store
        each: list[str] = []
        for q in queues:
            each += EXPIRED.key_item(active=s.keys.active(q))
        keys = EXPIRED.keys(each)
        with translated(s.url):
            flat = s.scripts.expired(keys=keys, args=EXPIRED.args(prefix=s.prefix, most=limit))
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


def count_commands(keys: Keys, counts: dict[int, dict[str, int]]) -> list[tuple[Any, ...]]:
    """The commands that add ``counts`` (as ``Maintenance.add_counts`` takes them): each
    minute's hash is kept two hours, the totals for good (Prometheus counters must only
    grow). Also sent ahead of an outcome by ``Broker.finish_and_claim``."""
    commands: list[tuple[Any, ...]] = []
    for m, fields in counts.items():
        minute_key = keys.stats(m)
        for key in (minute_key, keys.totals()):
            commands += [("HINCRBY", key, field, n) for field, n in fields.items()]
        commands.append(("EXPIRE", minute_key, 7200))
    return commands


def count_transaction(keys: Keys, counts: dict[int, dict[str, int]]) -> list[tuple[Any, ...]]:
    """``count_commands`` in MULTI/EXEC, to send ahead of another command: applied whole
    or not at all, however the connection breaks."""
    return [("MULTI",), *count_commands(keys, counts), ("EXEC",)]
