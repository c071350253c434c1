"""The running job's context: ``jobs.current()`` or a ``ctx`` parameter of the function."""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from jobs.errors import JobsError
from jobs.records import Claimed, encoder

if TYPE_CHECKING:
    from jobs.store.broker import Broker

log = logging.getLogger("jobs.job")

PROGRESS_EVERY = 0.25  # seconds between progress writes; a tight loop cannot flood Redis
LOG_LINES = 200


class Progress(msgspec.Struct, frozen=True, omit_defaults=True):
    done: float
    total: float | None = None
    message: str | None = None


_NOT_READ: Any = object()


class JobContext:
    """What a running job may know and do: its id, attempt, times, meta and progress.

    Built for every job, so what costs anything (times as datetimes, ``meta`` read from
    Redis) is computed only when asked for.
    """

    def __init__(self, job: Claimed, max_attempts: int, broker: Broker) -> None:
        self._job = job
        self._broker = broker
        self.job_id = job.id
        self.queue = job.queue
        self.function = job.spec.function if job.spec else "?"
        self.attempt = job.attempt
        self.max_attempts = max_attempts
        self._last_write = 0.0
        self._meta: dict[str, Any] | None = _NOT_READ

    @property
    def broker(self) -> Broker:
        """The broker the job was claimed through (enqueue follow-ups on the same server)."""
        return self._broker

    @property
    def is_final_attempt(self) -> bool:
        """True when a failure of this attempt is not retried for want of attempts
        (``Fail`` and ``dont_retry_on`` end a job on any attempt)."""
        return self.attempt >= self.max_attempts

    @property
    def enqueued_at(self) -> datetime:
        """When the job was enqueued (dispatched), in UTC; the same for every attempt."""
        return datetime.fromtimestamp(self._job.enqueued_at, UTC)

    @property
    def started_at(self) -> datetime:
        """When this attempt was claimed (the Redis server's clock), in UTC."""
        return datetime.fromtimestamp(self._job.started_at, UTC)

    @property
    def meta(self) -> dict[str, Any]:
        """What the enqueue gave with ``options(meta={...})`` (``{}`` when nothing): read
        from Redis the first time a job asks, so jobs that never do pay nothing."""
        if self._meta is _NOT_READ:
            self._meta = self._broker.jobs.meta(self.job_id)
        return dict(self._meta or {})

    def progress(self, done: float, total: float | None = None,
                 message: str | None = None) -> None:
        """Report progress; writes are throttled except the first and the final one."""
        now = time.monotonic()
        final = total is not None and done >= total
        if not final and self._last_write and now - self._last_write < PROGRESS_EVERY:
            return
        self._last_write = now
        text = (message or "")[:500]
        data = encoder.encode(Progress(done=done, total=total, message=text or None))
        self._broker.jobs.progress(self._job, data, done, total, text)

    def log(self, message: str) -> None:
        """A line in the worker's log and in the job's own log (last 200 lines kept)."""
        log.info("job %s: %s", self.job_id, message)
        self._broker.jobs.append_log(self.job_id, message[:2000], LOG_LINES)


_current: ContextVar[JobContext | None] = ContextVar("jobvisor_job", default=None)


def current() -> JobContext:
    """The context of the job running in this process; an error outside a job."""
    ctx = _current.get()
    if ctx is None:
        raise JobsError("jobs.current() is only available inside a running job")
    return ctx


def set_current(ctx: JobContext | None) -> Any:
    return _current.set(ctx)


def reset_current(token: Any) -> None:
    _current.reset(token)
