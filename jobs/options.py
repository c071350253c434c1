"""Per-enqueue options, and turning a call into an encoded job spec."""

from __future__ import annotations

import hashlib
import re
import secrets
import struct
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from jobs.backoff import Backoff
from jobs.encryption.sealer import Sealer
from jobs.errors import ConfigurationError, PayloadTooLarge
from jobs.priority import parse_priority
from jobs.rates import limit_names
from jobs.records import JobSpec, encode_spec, encoder
from jobs.store.keys import check_name


class EnqueueOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What ``.options(...)`` may set for one enqueue; ``None`` means "not given"."""

    queue: str | None = None
    priority: int | str | None = None
    delay: float | timedelta | None = None
    at: datetime | None = None
    job_id: str | None = None
    timeout: float | None = None
    soft_timeout: float | None = None
    max_attempts: int | None = None
    result_ttl: float | None = None
    depends_on: Sequence[Any] | None = None  # job ids or Job handles
    on_parent_failure: str | None = None  # "cancel" (default) or "run"
    pass_result: bool | None = None  # receive the single parent's result as first argument
    unique_for: float | None = None
    unique_key: str | None = None
    unique_until: str | None = None  # "finished" (default) or "window"
    # Named limits this job is under besides its function's, queue's and @job(limits=...).
    limits: str | Sequence[str] | None = None
    meta: dict[str, Any] | None = None  # free-form, JSON: who or what enqueued the job
    # Retry policy of this job, over the function's: a Backoff (or a mapping of its
    # fields), and exception classes or their names ("ConnectionError", "mod.Error").
    backoff: Backoff | Mapping[str, Any] | None = None
    retry_on: Sequence[type[BaseException] | str] | None = None
    dont_retry_on: Sequence[type[BaseException] | str] | None = None
    # True: run now in this process instead of queueing (jobs.inline); False: always
    # queue, whatever the function's should_queue says.
    inline: bool | None = None
    # True: encrypt this job's arguments and result (jobs.encryption), as @job(encrypt=True)
    # or [encryption] encrypt_all do; it cannot turn off what those ask for.
    encrypt: bool | None = None

    def merged(self, other: EnqueueOptions) -> EnqueueOptions:
        """These options with every field ``other`` sets taken from ``other``."""
        if other == NO_OPTIONS:  # the usual case, once or twice per enqueued job
            return self
        if self == NO_OPTIONS:
            return other
        changes = {f: v for f in other.__struct_fields__ if (v := getattr(other, f)) is not None}
        return msgspec.structs.replace(self, **changes)


NO_OPTIONS = EnqueueOptions()


class Call(msgspec.Struct, frozen=True):
    """A function name with its arguments and options, ready to enqueue (no I/O yet)."""

    function: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    options: EnqueueOptions = EnqueueOptions()


class Prepared(msgspec.Struct, frozen=True):
    """A call checked and encoded for the enqueue script."""

    id: str
    queue: str
    priority: int
    spec: bytes
    delay_ms: int
    at_ms: int
    custom_id: bool = False
    function: str = ""
    # Workflow options for the enqueue script (see enqueue.lua); empty for plain jobs.
    extra: dict[str, Any] = {}


_SHORT, _LONG = struct.Struct(">H"), struct.Struct(">I")
_NUMBERS = struct.Struct(">iddB")


def pack_job(p: Prepared, extra: bytes) -> bytes:
    """One job as the enqueue script reads it (``struct.unpack('>Hc0Ic0iddBIc0Hc0')``)."""
    job_id, function = p.id.encode(), p.function.encode()
    return b"".join((_SHORT.pack(len(job_id)), job_id, _LONG.pack(len(p.spec)), p.spec,
                     _NUMBERS.pack(p.priority, p.delay_ms, p.at_ms, p.custom_id),
                     _LONG.pack(len(extra)), extra, _SHORT.pack(len(function)), function))


_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # base32 (RFC 4648), lower case
# Two base32 characters for each 10-bit value: eight look-ups make an id.
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)


def new_job_id() -> str:
    # 80 random bits as 16 base32 characters: short keys keep Redis memory low, and
    # no id starts with "-" (which a command line would take for an option). Spelled
    # out by table rather than base64.b32encode, whose pure-Python loop costs more than
    # the rest of preparing a job.
    return id_of(secrets.token_bytes(10))


def id_of(raw: bytes) -> str:
    """Ten bytes as a job id: their base32 encoding, lower case."""
    n = int.from_bytes(raw, "big")
    p = _PAIRS
    return (p[n >> 70] + p[n >> 60 & 1023] + p[n >> 50 & 1023] + p[n >> 40 & 1023]
            + p[n >> 30 & 1023] + p[n >> 20 & 1023] + p[n >> 10 & 1023] + p[n & 1023])


MAX_SECONDS = 10 * 365 * 86400.0  # ten years: beyond this a value is a mistake


def check_seconds(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not 0.001 <= value <= MAX_SECONDS):
        raise ConfigurationError(
            f"{name} must be a number of seconds from 0.001 to {MAX_SECONDS:.0f}, got {value!r}"
        )
    return float(value)


def _delay_ms(delay: float | timedelta | None) -> int:
    if delay is None:
        return -1
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if (isinstance(seconds, bool) or not isinstance(seconds, int | float)
            or not 0 <= seconds <= MAX_SECONDS):
        raise ConfigurationError(
            f"delay must be 0..{MAX_SECONDS:.0f} seconds or a timedelta, got {delay!r}"
        )
    return int(seconds * 1000)


def _at_ms(at: datetime | None) -> int:
    if at is None:
        return -1
    if not isinstance(at, datetime) or at.tzinfo is None:
        raise ConfigurationError(
            f"at must be a timezone-aware datetime (e.g. datetime.now(UTC)), got {at!r}"
        )
    ms = int(at.astimezone(UTC).timestamp() * 1000)
    return max(ms, 0)


def _encode_spec(spec: JobSpec, max_bytes: int, meta_bytes: int = 0, job_id: str = "",
                 sealer: Sealer | None = None) -> bytes:
    """The stored spec; with ``sealer``, its arguments encrypted (the size checked is
    what is stored)."""
    try:
        if sealer is not None:
            plain = encoder.encode((spec.args, spec.kwargs))
            spec = msgspec.structs.replace(
                spec, args=[], kwargs={},
                sealed=sealer.seal_arguments(job_id, spec.function, plain))
        data = encode_spec(spec)
    except (TypeError, OverflowError):
        _raise_unencodable(spec)
        raise
    if len(data) + meta_bytes > max_bytes:
        with_meta = f" with {meta_bytes} of meta" if meta_bytes else ""
        sealed = " (encrypted)" if sealer is not None else ""
        raise PayloadTooLarge(
            f"job {spec.function} has a payload of {len(data) + meta_bytes} bytes{sealed}"
            f"{with_meta}, "
            "above max_payload_bytes "
            f"({max_bytes}): store large data elsewhere (a file or object store) and pass a "
            "reference, or raise [defaults].max_payload_bytes"
        )
    return data


def _raise_unencodable(spec: JobSpec) -> None:
    named = [(f"argument {i}", v) for i, v in enumerate(spec.args)]
    named += [(f"keyword argument {k!r}", v) for k, v in spec.kwargs.items()]
    for label, value in named:
        try:
            encoder.encode(value)
        except (TypeError, OverflowError) as exc:
            raise TypeError(
                f"{label} of {spec.function} cannot be stored ({exc}): pass MessagePack types "
                "(None, bool, int from -2**63 to 2**64-1, float, str, bytes, list, dict) or "
                "msgspec Structs"
            ) from None


def class_name(kind: type) -> str:
    """How errors and retry rules name a class: ``ValueError``, ``mymod.MyError``."""
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


_CLASS_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def exception_names(label: str, value: Sequence[type[BaseException] | str] | None
                    ) -> list[str] | None:
    """Per-enqueue ``retry_on`` / ``dont_retry_on`` as class names (a payload holds no
    classes); None when not given, ``[]`` to clear the function's list."""
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ConfigurationError(
            f"{label} must be a list of exception classes or names, got {value!r}")
    names = []
    for item in value:
        if isinstance(item, type) and issubclass(item, BaseException):
            names.append(class_name(item))
        elif isinstance(item, str) and _CLASS_NAME.match(item):
            names.append(item)
        else:
            raise ConfigurationError(
                f"{label} takes exception classes or names such as 'ConnectionError' or "
                f"'mymod.MyError', got {item!r}")
    return names


def checked_backoff(value: Backoff | Mapping[str, Any] | None) -> Backoff | None:
    """A per-enqueue backoff, validated as ``[defaults.backoff]`` is."""
    if value is None:
        return None
    raw = msgspec.to_builtins(value) if isinstance(value, Backoff) else value
    if not isinstance(raw, Mapping):
        raise ConfigurationError(
            f"backoff must be a Backoff or a mapping of its fields (kind, base, factor, cap, "
            f"jitter), got {value!r}")
    try:
        return msgspec.convert(raw, Backoff)
    except msgspec.ValidationError as exc:
        raise ConfigurationError(f"backoff: {exc}") from None


def check_attempts(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or not 1 <= value <= 1000):
        raise ConfigurationError(f"max_attempts must be an integer from 1 to 1000, got {value!r}")
    return value


_FUNCTION_NAME = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def check_function_name(name: str) -> str:
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        raise ConfigurationError(
            f"job name {name!r} is not valid: use 'package.module:function'"
        )
    if name.startswith("__main__:"):
        raise ConfigurationError(
            f"job {name!r} is defined in the script being run (__main__), which no worker "
            "can import: move the function into a module of [worker].modules and import it "
            "from there (or run the script with `python -m package.module`)"
        )
    return name


def _parent_ids(depends_on: Sequence[Any] | None) -> list[str]:
    if depends_on is None:
        return []
    if isinstance(depends_on, str | bytes) or not isinstance(depends_on, Sequence):
        raise ConfigurationError(
            f"depends_on must be a list of job ids or Job handles, got {depends_on!r}")
    ids = []
    for parent in depends_on:
        job_id = parent if isinstance(parent, str) else getattr(parent, "id", None)
        if not isinstance(job_id, str):
            raise ConfigurationError(
                f"depends_on takes job ids or Job handles, got {parent!r}")
        ids.append(check_name("depends_on job id", job_id))
    return list(dict.fromkeys(ids))


def unique_digest(call: Call, key: str | None, secret: bytes = b"") -> str:
    """The uniqueness key: the caller's, else the function with its arguments; keyed
    with ``secret`` for an encrypted job (``Sealer.unique_key``)."""
    if key is not None:
        if not isinstance(key, str) or not key:
            raise ConfigurationError(f"unique_key must be a non-empty string, got {key!r}")
        material = b"k\0" + key.encode()
    else:
        material = b"a\0" + encoder.encode(
            [call.function, list(call.args), sorted(call.kwargs.items())])
    return hashlib.blake2b(material, digest_size=16, key=secret).hexdigest()


_json = msgspec.json.Encoder()


def encode_meta(meta: Any) -> str:
    """``meta`` as JSON text, kept beside the job's spec in its record: an older worker
    that does not know it runs the job all the same."""
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise ConfigurationError(f"meta must be a dict with string keys, got {meta!r}")
    try:
        return _json.encode(meta).decode()
    except (TypeError, OverflowError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"meta cannot be stored as JSON ({exc}): give strings, numbers, booleans, None, "
            "lists and dicts") from None


def workflow_extra(call: Call, sealer: Sealer | None = None) -> dict[str, Any]:
    """What the enqueue script needs for dependencies, uniqueness, named limits and meta
    (empty when unused)."""
    opts = call.options
    extra: dict[str, Any] = {}
    if opts.meta is not None:
        extra["meta"] = encode_meta(opts.meta)
    parents = _parent_ids(opts.depends_on)
    if parents:
        extra["deps"] = parents
    if opts.on_parent_failure not in (None, "cancel", "run"):
        raise ConfigurationError(
            f"on_parent_failure must be 'cancel' or 'run', got {opts.on_parent_failure!r}")
    if opts.on_parent_failure == "run":
        extra["opf"] = "run"
    if opts.pass_result:
        if len(parents) != 1:
            raise ConfigurationError(
                "pass_result=True needs exactly one job in depends_on (the one whose result "
                f"is passed), got {len(parents)}")
        extra["pr"] = parents[0]
    if opts.unique_key is not None and opts.unique_for is None:
        raise ConfigurationError("unique_key needs unique_for=seconds (how long the key holds)")
    if opts.unique_until not in (None, "finished", "window"):
        raise ConfigurationError(
            f"unique_until must be 'finished' or 'window', got {opts.unique_until!r}")
    named = limit_names(opts.limits, "options")
    if named:
        extra["ln"] = list(named)
    window = check_seconds("unique_for", opts.unique_for)
    if window is not None:
        extra["uk"] = unique_digest(call, opts.unique_key,
                                    sealer.unique_key() if sealer is not None else b"")
        extra["ut"] = int(window * 1000)
        if opts.unique_until == "window":
            extra["uw"] = True
    return extra


def prepare(call: Call, *, default_queue: str, default_priority: int, max_bytes: int,
            sealer: Sealer | None = None) -> Prepared:
    """Check and encode one call; raises before anything is written. With ``sealer``,
    the arguments are stored encrypted (``jobs.encryption``)."""
    opts = call.options
    check_function_name(call.function)
    if opts.inline:
        raise ConfigurationError(
            f"inline=True runs one call at once in this process ({call.function}): use "
            ".enqueue() for it; bulk enqueues, chains and batches always queue")
    if opts.delay is not None and opts.at is not None:
        raise ConfigurationError("give either delay= or at=, not both")
    check_attempts(opts.max_attempts)
    if not all(isinstance(k, str) for k in call.kwargs):
        raise TypeError(f"keyword argument names of {call.function} must be strings")
    spec = JobSpec(
        function=call.function,
        args=list(call.args),
        kwargs=dict(call.kwargs),
        timeout=check_seconds("timeout", opts.timeout),
        soft_timeout=check_seconds("soft_timeout", opts.soft_timeout),
        max_attempts=opts.max_attempts,
        result_ttl=check_seconds("result_ttl", opts.result_ttl),
        backoff=checked_backoff(opts.backoff),
        retry_on=exception_names("retry_on", opts.retry_on),
        dont_retry_on=exception_names("dont_retry_on", opts.dont_retry_on),
    )
    extra = workflow_extra(call, sealer)
    job_id = check_name("job_id", opts.job_id) if opts.job_id is not None else new_job_id()
    return Prepared(
        id=job_id,
        queue=check_name("queue", opts.queue or default_queue),
        priority=parse_priority(opts.priority if opts.priority is not None else default_priority),
        spec=_encode_spec(spec, max_bytes, len(extra.get("meta", "").encode()), job_id, sealer),
        delay_ms=_delay_ms(opts.delay),
        at_ms=_at_ms(opts.at),
        custom_id=opts.job_id is not None,
        function=call.function,
        extra=extra,
    )
