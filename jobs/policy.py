"""The effective options of one job, and what happens after a failed attempt."""

from __future__ import annotations

import time
import traceback
from enum import StrEnum
from typing import Any

import msgspec

from jobs.backoff import Backoff
from jobs.decorator import ExceptionTypes, JobFunction
from jobs.errors import Fail, JobTimeout, Retry
from jobs.options import MAX_SECONDS
from jobs.records import AttemptError, ErrorKind, JobSpec
from jobs.settings import JobDefaults

MAX_TRACEBACK = 16_384
MAX_MESSAGE = 4_096


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """Per-enqueue option, else the ``@job`` option, else the configured default."""

    timeout: float
    soft_timeout: float | None
    max_attempts: int
    backoff: Backoff
    retry_on: ExceptionTypes = ()
    dont_retry_on: ExceptionTypes = ()
    result_ttl: float
    on_dead: str | None = None


def resolve(spec: JobSpec | None, fn: JobFunction[Any, Any] | None, d: JobDefaults) -> Policy:
    o = fn.job_options if fn is not None else None

    def pick(name: str, default: Any) -> Any:
        for source in (spec, o):
            value = getattr(source, name, None) if source is not None else None
            if value is not None:
                return value
        return default

    soft = pick("soft_timeout", d.soft_timeout or None)
    return Policy(
        timeout=pick("timeout", d.timeout),
        soft_timeout=soft if soft else None,
        max_attempts=pick("max_attempts", d.max_attempts),
        backoff=(o.backoff if o is not None and o.backoff is not None else d.backoff),
        retry_on=o.retry_on if o is not None else (),
        dont_retry_on=o.dont_retry_on if o is not None else (),
        result_ttl=pick("result_ttl", d.result_ttl),
        on_dead=o.on_dead if o is not None else None,
    )


class Verdict(StrEnum):
    COMPLETED = "completed"
    RETRY = "retry"
    DEAD = "dead"


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    verdict: Verdict
    result: bytes = b""
    error: AttemptError | None = None
    retry_in: float | None = None
    duration: float = 0.0
    exception: BaseException | None = None  # what the attempt raised, for on_failure


def safe_str(exc: BaseException) -> str:
    """``str(exc)``, even for exceptions whose ``__str__`` raises."""
    try:
        text = str(exc)
    except Exception:
        text = f"<unprintable {type(exc).__name__}>"
    return text[:MAX_MESSAGE]


def type_name(exc: BaseException) -> str:
    t = type(exc)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def error_of(exc: BaseException, attempt: int, duration: float, worker: str) -> AttemptError:
    try:
        tb = "".join(traceback.format_exception(exc))
    except Exception:
        tb = ""
    kind = ErrorKind.TIMEOUT if isinstance(exc, JobTimeout) else ErrorKind.EXCEPTION
    return AttemptError(
        attempt=attempt, kind=kind, type=type_name(exc), message=safe_str(exc),
        traceback=tb[-MAX_TRACEBACK:], duration=round(duration, 6), at=time.time(), worker=worker,
    )


def after_failure(policy: Policy, attempt: int, exc: BaseException | None) -> float | None:
    """Seconds until the next attempt, or None when the job is dead.

    ``exc`` is None for failures outside the function (timeout kill, crash, lost worker),
    which are retried like any exception while attempts remain.
    """
    if isinstance(exc, Fail):
        return None
    if exc is not None and not isinstance(exc, Retry):
        if policy.dont_retry_on and isinstance(exc, policy.dont_retry_on):
            return None
        if policy.retry_on and not isinstance(exc, policy.retry_on):
            return None
    if attempt >= policy.max_attempts:
        return None
    if isinstance(exc, Retry) and exc.after is not None:
        after = float(exc.after)
        return min(max(0.0, after), MAX_SECONDS) if after == after else 0.0  # NaN -> now
    return policy.backoff.delay(attempt)
