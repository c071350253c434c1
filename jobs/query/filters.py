"""What narrows a job list: function, error type, text, age. Evaluated on records, so
the same filter lists, counts and drives a bulk action."""

from __future__ import annotations

import math

import msgspec

from jobs.errors import ConfigurationError
from jobs.records import JobRecord

_json = msgspec.json.Encoder()


class JobFilter(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Every field left out matches all. Ages are seconds since the job's time in its
    state: its end for completed, dead and canceled jobs, else its enqueue."""

    function: str | None = None  # module:function, exactly
    error_type: str | None = None  # the last error's type (ValueError) or kind (timeout)
    # In the id, arguments, or last error's message (any case). Encrypted arguments and
    # messages are not searched: that would decrypt every job of the walk.
    text: str | None = None
    older_than: float | None = None
    newer_than: float | None = None

    def __post_init__(self) -> None:
        for name in ("older_than", "newer_than"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ConfigurationError(f"{name} must be a number of seconds >= 0, "
                                         f"not {value!r}")

    def is_empty(self) -> bool:
        return self == _EVERYTHING

    def matches(self, record: JobRecord, now: float) -> bool:
        if self.function is not None and (record.spec is None
                                          or record.spec.function != self.function):
            return False
        last = record.errors[-1] if record.errors else None
        if self.error_type is not None and (
                last is None or self.error_type not in (last.type, last.kind.value)):
            return False
        if self.older_than is not None or self.newer_than is not None:
            age = now - (record.finished_at or record.enqueued_at or now)
            if self.older_than is not None and age < self.older_than:
                return False
            if self.newer_than is not None and age > self.newer_than:
                return False
        return self.text is None or self.text.casefold() in _searchable(record)


_EVERYTHING = JobFilter()


def _searchable(record: JobRecord) -> str:
    parts = [record.id]
    if record.spec is not None:
        parts.append(record.spec.function)
        if record.spec.sealed is None:
            parts.append(_json.encode([record.spec.args, record.spec.kwargs]).decode())
    if record.errors:
        parts += (record.errors[-1].type, record.errors[-1].message)
    if record.cancel_reason:
        parts.append(record.cancel_reason)
    return "\n".join(parts).casefold()
