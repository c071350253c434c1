"""The effective options of one job, and what happens after a failed attempt."""

from __future__ import annotations

import time
import traceback
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import msgspec

from jobs.backoff import Backoff
from jobs.errors import Fail, JobTimeout, Retry
from jobs.options import MAX_SECONDS, class_name
from jobs.records import AttemptError, ErrorKind, JobSpec
from jobs.settings import JobDefaults

if TYPE_CHECKING:  # annotations only: jobs.decorator enqueues, which runs jobs inline
    from jobs.decorator import JobFunction

MAX_TRACEBACK = 16_384
MAX_MESSAGE = 4_096

# Exception classes (``@job``) or class names (per enqueue: a payload holds no classes).
ExceptionRules = tuple[type[BaseException] | str, ...]


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """Per-enqueue option, else the ``@job`` option, else the configured default."""

    timeout: float
    soft_timeout: float | None
    max_attempts: int
    backoff: Backoff
    retry_on: ExceptionRules = ()
    dont_retry_on: ExceptionRules = ()
    result_ttl: float
    on_dead: str | None = None


# The policy of a function's jobs that set no option of their own, per function and
# defaults (both kept in the value: an id is only reused after its object is gone; the
# function's options too, so options replaced on the function are seen).
_PLAIN: dict[tuple[int, int], tuple[object, object, JobDefaults, Policy]] = {}
_PLAIN_MAX = 1024


def resolve(spec: JobSpec | None, fn: JobFunction[Any, Any] | None, d: JobDefaults) -> Policy:
    if spec is not None and fn is not None and _plain(spec):
        key = (id(fn), id(d))
        hit = _PLAIN.get(key)
        if hit is not None and hit[0] is fn and hit[1] is fn.job_options and hit[2] is d:
            return hit[3]
        policy = _resolve(None, fn, d)
        if len(_PLAIN) >= _PLAIN_MAX:
            _PLAIN.clear()
        _PLAIN[key] = (fn, fn.job_options, d, policy)
        return policy
    return _resolve(spec, fn, d)


def _plain(spec: JobSpec) -> bool:
    """Whether the job left every option to its function and the defaults (the usual
    case: its policy is then the same for every job of the function)."""
    return (spec.timeout is None and spec.soft_timeout is None and spec.max_attempts is None
            and spec.result_ttl is None and spec.backoff is None and spec.retry_on is None
            and spec.dont_retry_on is None)


def _resolve(spec: JobSpec | None, fn: JobFunction[Any, Any] | None,
             d: JobDefaults) -> Policy:
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
        backoff=pick("backoff", d.backoff),
        # An enqueue's list replaces the function's, even an empty one (retry on anything).
        retry_on=tuple(pick("retry_on", ())),
        dont_retry_on=tuple(pick("dont_retry_on", ())),
        result_ttl=pick("result_ttl", d.result_ttl),
        on_dead=o.on_dead if o is not None else None,
    )


def _names(kind: type[BaseException]) -> frozenset[str]:
    """The names an exception class answers to: each class of its MRO by bare name,
    qualified name and ``module.qualname``."""
    out: set[str] = set()
    for c in kind.__mro__:
        out |= {c.__name__, c.__qualname__, f"{c.__module__}.{c.__qualname__}"}
    return frozenset(out)


def matches(exc: BaseException, rules: ExceptionRules) -> bool:
    """Whether ``exc`` is one of ``rules``: an instance of a class, or of a class named
    so (a bare name matches that class or any subclass, wherever defined; a dotted
    ``module.Class`` name matches only that module's class and its subclasses)."""
    names: frozenset[str] | None = None  # only when a rule is a name (after a failure)
    for rule in rules:
        if isinstance(rule, str):
            names = names if names is not None else _names(type(exc))
            if rule in names:
                return True
        elif isinstance(exc, rule):
            return True
    return False


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
    return class_name(type(exc))


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
        if policy.dont_retry_on and matches(exc, policy.dont_retry_on):
            return None
        if policy.retry_on and not matches(exc, policy.retry_on):
            return None
    if attempt >= policy.max_attempts:
        return None
    if isinstance(exc, Retry) and exc.after is not None:
        after = float(exc.after)
        return min(max(0.0, after), MAX_SECONDS) if after == after else 0.0  # NaN -> now
    return policy.backoff.delay(attempt)
