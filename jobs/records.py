"""What is stored in Redis, as frozen msgspec Structs, with the one codec used everywhere."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import msgspec

from jobs.backoff import Backoff
from jobs.states import JobState


class JobSpec(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True,
              forbid_unknown_fields=True):
    """The immutable part of a job, written once at enqueue.

    Options left ``None`` fall back to the function's ``@job`` options, then to the
    configured defaults, at the time the job runs. Stored as a compact array
    (``encode_spec``); one longer than this version knows (written by a newer jobvisor)
    is refused, not half-obeyed. Fields are only ever added at the end, and a spec that
    sets none of the later ones is stored as before they existed, so older workers still
    run it. ``retry_on`` and ``dont_retry_on`` hold exception class names
    (``policy.matches``). An encrypted job (``jobs.encryption``) keeps ``args`` and
    ``kwargs`` empty and holds both, sealed, in ``sealed``.
    """

    function: str
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    timeout: float | None = None
    soft_timeout: float | None = None
    max_attempts: int | None = None
    result_ttl: float | None = None
    backoff: Backoff | None = None
    retry_on: list[str] | None = None
    dont_retry_on: list[str] | None = None
    sealed: bytes | None = None


class ErrorKind(StrEnum):
    EXCEPTION = "exception"
    TIMEOUT = "timeout"
    CRASH = "crash"
    LOST = "lost"
    INVALID = "invalid"


class AttemptError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Why one attempt failed; a job keeps one per failed attempt.

    An encrypted job's error keeps ``type`` and ``kind`` readable; its message and
    traceback are sealed in ``sealed`` and ``message`` reads ``<encrypted>``.
    """

    attempt: int
    kind: ErrorKind
    type: str
    message: str
    traceback: str = ""
    duration: float = 0.0
    at: float = 0.0
    worker: str = ""
    sealed: bytes = b""


class Claimed(msgspec.Struct, frozen=True, kw_only=True):
    """A job a worker claimed: what it needs to run it and to write its outcome."""

    id: str
    queue: str
    token: str
    spec: JobSpec | None  # None: the stored spec is unreadable; the job is marked dead
    attempt: int
    priority: int
    errors: tuple[AttemptError, ...]
    enqueued_at: float
    started_at: float
    parent_result: bytes | None = None  # chains: the parent's encoded return value
    corrupt: str | None = None  # what of the stored record cannot be read: the job is dead
    trace: bytes | None = None  # the enqueue span's W3C trace context (jobs.tracing), JSON


class ExpiredLease(msgspec.Struct, frozen=True, kw_only=True):
    """A claimed job whose lease ran out: the worker that claimed it is gone or cut off."""

    id: str
    queue: str
    token: str
    attempts: int
    spec: JobSpec | None
    errors: tuple[AttemptError, ...]


class JobRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Everything known about a job, read from its Redis hash."""

    id: str
    queue: str
    state: JobState
    priority: int
    attempts: int
    spec: JobSpec | None
    errors: tuple[AttemptError, ...] = ()
    result: bytes | None = None
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    due_at: float | None = None
    token: str | None = None
    cancel_reason: str | None = None
    progress: Any = None
    corrupt: str | None = None
    waiting_on: int = 0  # parents not yet final (state waiting)
    batch_id: str | None = None
    cancel_requested: str | None = None  # a running job asked to stop, with the reason
    held_by: str | None = None  # the limit holding a queued job back: fn:..., q:... or n:...
    parents: tuple[str, ...] = ()  # the jobs it was enqueued to wait for
    meta: dict[str, Any] | None = None  # given at enqueue with options(meta={...})


encoder = msgspec.msgpack.Encoder()
spec_decoder = msgspec.msgpack.Decoder(JobSpec)

FIRST_FORMAT = 7  # the fields of JobSpec every version writes (up to result_ttl)


def encode_spec(spec: JobSpec) -> bytes:
    """A spec as stored: trailing options that are not set are left out (msgspec writes
    every field of an array-like Struct), so a job that does not use them stays
    readable by a jobvisor older than they are."""
    values = msgspec.structs.astuple(spec)
    end = len(values)
    while end > FIRST_FORMAT and values[end - 1] is None:
        end -= 1
    return encoder.encode(values[:end])
errors_decoder = msgspec.msgpack.Decoder(tuple[AttemptError, ...])
any_decoder = msgspec.msgpack.Decoder()
meta_decoder = msgspec.json.Decoder(dict[str, Any])


def decode_meta(raw: bytes | None) -> dict[str, Any] | None:
    """A job's meta; None when it has none, or when it cannot be read (shown, not raised)."""
    if not raw:
        return None
    try:
        return meta_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return {"unreadable": raw.decode("utf-8", "replace")[:200]}


def decode_errors(raw: bytes | None) -> tuple[AttemptError, ...]:
    return errors_decoder.decode(raw) if raw else ()


def ms_to_s(raw: bytes | str | int | None) -> float | None:
    return None if raw is None else int(raw) / 1000.0


def _lenient(raw: bytes | None) -> Any:
    if not raw:
        return None
    try:
        return any_decoder.decode(raw)
    except msgspec.DecodeError:
        return None


def record_from_hash(job_id: str, fields: dict[bytes, bytes]) -> JobRecord:
    """Build a record from HGETALL; a corrupt spec or error list is reported, not raised."""
    corrupt = None
    spec: JobSpec | None = None
    errors: tuple[AttemptError, ...] = ()
    try:
        spec = spec_decoder.decode(fields[b"spec"])
    except (KeyError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        corrupt = f"job spec unreadable: {exc}"
    try:
        errors = decode_errors(fields.get(b"errs"))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        corrupt = corrupt or f"error history unreadable: {exc}"
    cancel = fields.get(b"why")
    token = fields.get(b"tok")
    try:
        state = JobState(fields.get(b"st", b"").decode())
    except ValueError:
        state = JobState.DEAD
        corrupt = corrupt or f"unknown state {fields.get(b'st')!r}"
    numbers: dict[bytes, int | None] = {}
    for name in (b"pri", b"att", b"deps", b"te", b"ts", b"tf", b"due"):
        raw = fields.get(name)
        try:
            numbers[name] = int(raw) if raw is not None else None
        except ValueError:
            numbers[name] = None
            corrupt = corrupt or f"field {name.decode()} is not a number: {raw!r}"
    return JobRecord(
        id=job_id,
        queue=fields.get(b"q", b"").decode(),
        state=state,
        priority=numbers[b"pri"] or 0,
        attempts=numbers[b"att"] or 0,
        spec=spec,
        errors=errors,
        result=fields.get(b"res"),
        enqueued_at=ms_to_s(numbers[b"te"]),
        started_at=ms_to_s(numbers[b"ts"]),
        finished_at=ms_to_s(numbers[b"tf"]),
        due_at=ms_to_s(numbers[b"due"]),
        token=token.decode() if token else None,
        cancel_reason=cancel.decode() if cancel else None,
        progress=_lenient(fields.get(b"prog")),
        corrupt=corrupt,
        waiting_on=numbers[b"deps"] or 0,
        batch_id=_text(fields.get(b"b")),
        cancel_requested=_text(fields.get(b"cx")),
        held_by=_text(fields.get(b"hold")),
        parents=tuple(fields[b"par"].decode().split(",")) if fields.get(b"par") else (),
        meta=decode_meta(fields.get(b"meta")),
    )


def _text(raw: bytes | None) -> str | None:
    return raw.decode() if raw else None


def spec_or_none(raw: bytes | None) -> JobSpec | None:
    """A corrupt or missing spec is None: the caller marks the job dead with that reason."""
    if not raw:
        return None
    try:
        return spec_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def errors_or_none(raw: bytes | None) -> tuple[AttemptError, ...]:
    """The error history, or none when it cannot be read (the record is reported corrupt)."""
    try:
        return decode_errors(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ()


def claimed_from_reply(reply: list[Any], queues: Sequence[str], token: str) -> Claimed:
    """The claim scripts' reply as a ``Claimed``; a damaged field never raises here (the
    worker would crash on the job again and again): it is named in ``corrupt``."""
    pos, job_id, spec, attempt, priority, errs, enqueued, now, *rest = reply
    decoded = spec_or_none(spec)
    try:  # the usual case, every field readable: no list of what is not
        if decoded is None or (len(rest) > 1 and rest[1]):
            raise ValueError
        errors = errors_decoder.decode(errs) if errs else ()
        att, pri, te = int(attempt or 1), int(priority or 0), int(enqueued or 0)
        corrupt = None
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        errors, (att, pri, te), corrupt = _damaged(rest, decoded, errs, attempt, priority,
                                                  enqueued)
    return Claimed(
        id=job_id.decode(),
        queue=queues[int(pos) - 1],
        token=token,
        spec=decoded,
        attempt=att,
        priority=pri,
        errors=errors,
        enqueued_at=te / 1000.0,
        started_at=int(now) / 1000.0,
        parent_result=rest[0] if rest else None,
        corrupt=corrupt,
        trace=rest[2] if len(rest) > 2 else None,
    )


def _damaged(rest: list[Any], decoded: JobSpec | None, errs: bytes | None,
             *numbers: bytes | None) -> tuple[tuple[AttemptError, ...], list[int], str | None]:
    """What of a claimed record can be read, and what cannot, in words."""
    unreadable = [name.decode() for name in (rest[1] or b"").split(b",") if name] \
        if len(rest) > 1 else []
    if decoded is None:
        unreadable.insert(0, "spec")
    try:
        errors = decode_errors(errs)
    except (msgspec.DecodeError, msgspec.ValidationError):
        errors = ()
        unreadable.append("error history")
    values = []
    for name, raw, default in zip(("att", "pri", "te"), numbers, (1, 0, 0), strict=True):
        try:
            values.append(int(raw or default))
        except ValueError:
            values.append(default)
            if name not in unreadable:
                unreadable.append(name)
    return errors, values, f"unreadable {', '.join(unreadable)}" if unreadable else None
