"""A job as every surface shows it: plain data that prints as text and encodes as JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobs.effective import FunctionOptions, options_of
from jobs.encryption.sealer import HIDDEN, key_of
from jobs.errors import DecryptionError
from jobs.job import stored_value
from jobs.records import JobRecord, JobSpec
from jobs.states import JobState
from jobs.store.broker import Broker


def iso(ts: float | None) -> str | None:
    """An epoch time as ISO 8601 with this host's UTC offset (text and JSON alike)."""
    if not ts:
        return None
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="milliseconds")


def decoded_result(r: JobRecord, broker: Broker) -> Any:
    """The return value; ``<encrypted>`` when this process lacks its key."""
    try:
        return stored_value(r, broker)
    except (DecryptionError, ValueError):  # ValueError: keys misconfigured here
        return HIDDEN
    except Exception:
        return "<undecodable>"


def readable_spec(r: JobRecord, broker: Broker) -> JobSpec | None:
    """The spec with its arguments decrypted when they can be; else as stored."""
    if r.spec is None or r.spec.sealed is None:
        return r.spec
    try:
        return broker.sealer.open_spec(r.id, r.spec)
    except (DecryptionError, ValueError):
        return r.spec


def job_view(r: JobRecord, broker: Broker, log: list[str] | None = None,
             published: dict[str, FunctionOptions] | None = None) -> dict[str, Any]:
    """Every field of a job; options are the effective ones (the job's own, else the
    function's as the supervisors that run it published them, else the defaults). An
    encrypted job's arguments, result and error messages are shown decrypted when this
    process has the key, else as ``<encrypted>``; ``encrypted`` names the key."""
    spec = readable_spec(r, broker)
    hidden = spec is not None and spec.sealed is not None
    errors = broker.sealer.readable_errors(r.id, r.errors)
    last = errors[-1] if errors else None
    options = options_of(r.spec, broker, published)
    return {
        "id": r.id, "function": r.spec.function if r.spec else None, "queue": r.queue,
        "priority": r.priority, "state": r.state.value, "attempts": r.attempts,
        "max_attempts": options["max_attempts"], "timeout": options["timeout"],
        "backoff": options["backoff"], "retry_on": options["retry_on"],
        "dont_retry_on": options["dont_retry_on"],
        "args": HIDDEN if hidden else spec.args if spec else None,
        "kwargs": HIDDEN if hidden else spec.kwargs if spec else None,
        "encrypted": key_of(r.spec.sealed) if r.spec else None,
        "error": {"type": last.type, "kind": last.kind.value, "message": last.message,
                  "traceback": last.traceback} if last else None,
        "errors": [{"attempt": e.attempt, "kind": e.kind.value, "type": e.type,
                    "message": e.message, "traceback": e.traceback, "duration": e.duration,
                    "worker": e.worker, "at": iso(e.at)} for e in errors],
        "result": decoded_result(r, broker), "progress": r.progress,
        "enqueued_at": iso(r.enqueued_at), "started_at": iso(r.started_at),
        "finished_at": iso(r.finished_at), "due_at": iso(r.due_at),
        "cancel_reason": r.cancel_reason, "waiting_on": r.waiting_on, "batch_id": r.batch_id,
        "cancel_requested": r.cancel_requested,
        # A limit's mark outlives the hold on a job canceled while held: only queued counts.
        "held_by": r.held_by if r.state is JobState.QUEUED else None,
        "parents": list(r.parents),
        "meta": r.meta or {},
        "corrupt": r.corrupt,
        "log": log or [],
    }
