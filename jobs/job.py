"""``Job``: a handle to follow one job by id from any process."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from jobs.errors import JobCanceled, JobFailed, JobNotFound, ResultTimeout
from jobs.records import AttemptError, JobRecord, any_decoder
from jobs.states import JobState
from jobs.store.broker import Broker, default_broker

_FOREVER_CHUNK = 30.0
_FINAL = {s.value for s in JobState if s.is_final}


def _utc(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts else None


class Job:
    """A job id plus the last record read for it; ``refresh()`` reads it again."""

    __slots__ = ("_record", "broker", "id")

    def __init__(self, job_id: str, broker: Broker | None = None,
                 record: JobRecord | None = None) -> None:
        self.id = job_id
        self.broker = broker or default_broker()
        self._record = record

    def __repr__(self) -> str:
        if self._record is None:  # no Redis read in a repr: the state shows once read
            return f"<Job {self.id}>"
        return f"<Job {self.id} {self._record.state} {self.function}>"

    @classmethod
    def fetch(cls, job_id: str, broker: Broker | None = None) -> Job:
        """Look a job up by id alone; ``JobNotFound`` if it never existed or has expired."""
        return cls(job_id, broker).refresh()

    def refresh(self) -> Job:
        record = self.broker.jobs.fetch(self.id)
        if record is None:
            raise JobNotFound(
                f"no job {self.id!r} in namespace {self.broker.keys.ns!r}: it was never "
                "enqueued there, was purged, or its record expired (result_ttl / dead_ttl)"
            )
        self._record = record
        return self

    @property
    def record(self) -> JobRecord:
        if self._record is None:
            self.refresh()
        assert self._record is not None
        return self._record

    @property
    def state(self) -> JobState:
        return self.record.state

    @property
    def attempts(self) -> int:
        return self.record.attempts

    @property
    def queue(self) -> str:
        return self.record.queue

    @property
    def priority(self) -> int:
        return self.record.priority

    @property
    def function(self) -> str:
        spec = self.record.spec
        return spec.function if spec else "<corrupt>"

    @property
    def errors(self) -> tuple[AttemptError, ...]:
        """One entry per failed attempt, oldest first; an encrypted job's messages are
        decrypted when this process has the key (else they read ``<encrypted>``)."""
        return self.broker.sealer.readable_errors(self.id, self.record.errors)

    @property
    def error(self) -> AttemptError | None:
        """The latest attempt's error, or None when no attempt has failed."""
        errors = self.errors
        return errors[-1] if errors else None

    @property
    def progress(self) -> Any:
        return self.record.progress

    @property
    def meta(self) -> dict[str, Any]:
        """What the enqueue gave with ``options(meta={...})``; ``{}`` when nothing."""
        return dict(self.record.meta or {})

    # Times are aware datetimes in UTC; ``record`` keeps the stored epoch seconds.
    @property
    def enqueued_at(self) -> datetime | None:
        return _utc(self.record.enqueued_at)

    @property
    def started_at(self) -> datetime | None:
        """When the latest attempt started."""
        return _utc(self.record.started_at)

    @property
    def finished_at(self) -> datetime | None:
        return _utc(self.record.finished_at)

    @property
    def due_at(self) -> datetime | None:
        """When a scheduled job (delayed, or waiting to retry) becomes due."""
        return _utc(self.record.due_at)

    def cancel(self, reason: str = "canceled by request") -> bool:
        """Cancel this job; False when it had already ended.

        A waiting, scheduled or queued job is canceled at once. A running job is killed by
        the supervisor running it, on whichever host, within about a second, and then ends
        ``canceled`` (``result()`` raises ``JobCanceled`` once it has).
        """
        reply = self.broker.jobs.cancel(self.id, self.record.queue, reason)
        self._record = None
        if reply is None:
            raise JobNotFound(f"no job {self.id!r} to cancel")
        return reply in (1, "active")

    def result(self, timeout: float | None = None) -> Any:
        """Block on Redis until the job is final, then return its value.

        Raises ``JobFailed`` (dead), ``JobCanceled``, ``ResultTimeout`` after ``timeout``
        seconds (None waits forever), or ``JobNotFound``; ``DecryptionError`` when the
        result is encrypted with a key this process does not have.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        registered_until = 0.0
        while True:
            now = time.monotonic()
            remaining = _FOREVER_CHUNK if deadline is None else deadline - now
            if remaining > 0 and now >= registered_until:
                # One waiter registration per result() call (renewed only for endless waits).
                state = self.broker.jobs.watch(self.id)
                registered_until = now + remaining
            else:
                state = self.broker.jobs.state_of(self.id)
            if state is None:
                raise JobNotFound(f"no job {self.id!r}: never enqueued, purged or expired")
            if state in _FINAL:
                return self._final_value()
            if remaining <= 0:
                raise ResultTimeout(
                    f"job {self.id} is still {state} after {timeout} s; call result() again "
                    "to keep waiting"
                )
            self.broker.jobs.wait_done(self.id, remaining)

    def _final_value(self) -> Any:
        record = self.refresh().record
        if record.state is JobState.COMPLETED:
            return stored_value(record, self.broker)
        if record.state is JobState.CANCELED:
            raise JobCanceled(self.id, record.cancel_reason or "canceled")
        last = self.error
        message = f"{last.type}: {last.message}" if last else "no error recorded"
        raise JobFailed(self.id, f"after {record.attempts} attempt(s), last error {message}")


def stored_value(record: JobRecord, broker: Broker) -> Any:
    """A completed job's return value, decrypted when it was encrypted; a
    ``DecryptionError`` (a ``JobsError``) says which key this process lacks."""
    if not record.result:
        return None
    return any_decoder.decode(broker.sealer.open_result(record.id, record.result))
