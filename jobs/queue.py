"""``Queue``: enqueue by function or by name, bulk enqueue, counts, dead letters."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from jobs.decorator import JobFunction
from jobs.enqueue import enqueue_many
from jobs.errors import ConfigurationError
from jobs.inline import dispatch
from jobs.job import Job
from jobs.options import Call, EnqueueOptions
from jobs.query import JobFilter, act_on_matching, list_jobs
from jobs.query.listing import MAX_PAGE
from jobs.records import JobRecord
from jobs.states import JobState
from jobs.store.broker import Broker, default_broker

COUNTED_STATES = (JobState.QUEUED, JobState.SCHEDULED, JobState.ACTIVE, JobState.WAITING,
                  JobState.COMPLETED, JobState.DEAD, JobState.CANCELED)


def _as_call(target: JobFunction[Any, Any] | str, args: tuple[Any, ...],
             kwargs: dict[str, Any], queue: str, options: EnqueueOptions) -> Call:
    if isinstance(target, JobFunction):
        base = target.call(*args, **kwargs)
        return Call(base.function, base.args, base.kwargs,
                    base.options.merged(EnqueueOptions(queue=queue)).merged(options))
    if not isinstance(target, str):
        raise ConfigurationError(
            f"enqueue takes a @job function or a 'module:function' name, got {target!r}"
        )
    return Call(target, args, kwargs, EnqueueOptions(queue=queue).merged(options))


class Queue:
    """One named queue: enqueue onto it and inspect it.

    ``Queue()`` is the default queue, ``[defaults] queue`` of the settings its broker
    was made with ("default" unless configured).
    """

    def __init__(self, name: str | None = None, broker: Broker | None = None,
                 options: EnqueueOptions | None = None) -> None:
        self._name = name
        self._broker = broker
        self._options = options or EnqueueOptions()

    @property
    def name(self) -> str:
        return self._name or self.broker.defaults.queue

    @property
    def broker(self) -> Broker:
        return self._broker or default_broker()

    def __repr__(self) -> str:
        return f"<Queue {self.name}>"

    def options(self, **overrides: Any) -> Queue:
        """This queue with per-enqueue options (priority, delay, at, job_id, timeout, ...)."""
        return Queue(self._name, self._broker,
                     self._options.merged(EnqueueOptions(**overrides)))

    def enqueue(self, target: JobFunction[Any, Any] | str, /, *args: Any, **kwargs: Any) -> Job:
        """Enqueue a ``@job`` function or, without importing it, a ``"module:function"`` name
        (run here at once with ``options(inline=True)``: ``jobs.inline``)."""
        return dispatch(_as_call(target, args, kwargs, self.name, self._options), self.broker)

    def call(self, target: JobFunction[Any, Any] | str, /, *args: Any, **kwargs: Any) -> Call:
        return _as_call(target, args, kwargs, self.name, self._options)

    def enqueue_many(self, calls: Iterable[Call | tuple[Any, ...]]) -> list[Job]:
        """Enqueue many jobs on this queue: ``Call`` objects or ``(target, *args)`` tuples."""
        normal = [
            Call(c.function, c.args, c.kwargs,
                 msgspec.structs.replace(c.options.merged(self._options), queue=self.name))
            if isinstance(c, Call) else self.call(c[0], *c[1:])
            for c in calls
        ]
        return enqueue_many(normal, self.broker)

    def counts(self) -> dict[str, int]:
        """How many jobs of this queue are in each state right now.

        ``queued`` includes the jobs a rate or concurrency limit holds back, which are
        also counted on their own as ``held``.
        """
        counts = self.broker.jobs.counts(self.name, [s.value for s in COUNTED_STATES])
        counts["held"] = self.broker.jobs.held(self.name)
        counts["queued"] += counts["held"]
        return counts

    def cancel(self, job_id: str, reason: str = "canceled by request") -> bool:
        return Job(job_id, self.broker).cancel(reason)

    # -- dead letters --------------------------------------------------------------------

    def dead(self, *, function: str | None = None, error_type: str | None = None,
             older_than: float | None = None, newer_than: float | None = None,
             limit: int | None = 100) -> list[JobRecord]:
        """Dead jobs, newest first, filtered by function, last error type and age (seconds):
        the pages of ``jobs.query.list_jobs``, so they match ``jobvisor jobs list``."""
        where = JobFilter(function=function, error_type=error_type, older_than=older_than,
                          newer_than=newer_than)
        out: list[JobRecord] = []
        cursor: str | None = None
        while limit is None or len(out) < limit:
            want = MAX_PAGE if limit is None else min(MAX_PAGE, limit - len(out))
            page = list_jobs(self.broker, self.name, "dead", where=where, cursor=cursor,
                             limit=want)
            out += page.jobs
            if page.next is None:
                break
            cursor = page.next
        return out

    def requeue_dead(self, job_id: str | None = None, **filters: Any) -> int:
        """Requeue one dead job, or every dead job matching the filters (all without any)."""
        if job_id:
            return int(self._checked(job_id, self.broker.jobs.requeue(job_id, self.name)))
        return act_on_matching(self.broker, self.name, "dead", "requeue",
                               where=JobFilter(**filters)).done

    def purge_dead(self, job_id: str | None = None, **filters: Any) -> int:
        """Delete one dead job, or every dead job matching the filters (all without any)."""
        if job_id:
            return int(self._checked(job_id, self.broker.jobs.purge(job_id, self.name)))
        return act_on_matching(self.broker, self.name, "dead", "delete",
                               where=JobFilter(**filters)).done

    def _checked(self, job_id: str, reply: int | str | None) -> bool:
        if reply == -1:
            raise ConfigurationError(
                f"job {job_id} is not on queue {self.name!r} but on "
                f"{self.broker.jobs.queue_of(job_id)!r}: use that queue"
            )
        return reply == 1


def queue_counts(broker: Broker | None = None) -> dict[str, dict[str, int]]:
    """Counts per state for every queue this namespace has seen."""
    broker = broker or default_broker()
    return {q: Queue(q, broker).counts() for q in broker.jobs.known_queues()}
