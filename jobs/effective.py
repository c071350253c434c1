"""A job's effective options, the same wherever they are shown.

A job's own options (set at enqueue) win; then the function's ``@job`` options and the
``[defaults]`` of the supervisors that run it, which each supervisor publishes when it
loads its job modules; then this process's defaults. The CLI, the library and any other
view answer from here, so ``show``, ``wait`` and the dead-letter list agree, and none of
them has to import the job modules to know a function's ``max_attempts``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from jobs.backoff import Backoff
from jobs.decorator import JobFunction
from jobs.options import class_name
from jobs.policy import ExceptionRules, resolve
from jobs.records import JobSpec
from jobs.settings import JobDefaults
from jobs.store.broker import Broker
from jobs.store.connection import translated


class FunctionOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What one registered function runs with, given its supervisor's defaults."""

    queue: str
    timeout: float
    soft_timeout: float | None
    max_attempts: int
    result_ttl: float
    # Published since per-enqueue retry policies; an older supervisor's entry lacks them.
    priority: int | None = None
    backoff: Backoff | None = None
    retry_on: list[str] = []
    dont_retry_on: list[str] = []
    rate_limit: str | None = None  # "10/1s": at most 10 starts per second, cluster-wide
    max_concurrency: int | None = None
    unique_for: float | None = None
    on_dead: str | None = None
    should_queue: str | None = None  # the predicate deciding to run a call inline
    encrypt: bool = False  # @job(encrypt=True): arguments and result encrypted in Redis


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(FunctionOptions)


def rule_names(rules: ExceptionRules) -> list[str]:
    return [r if isinstance(r, str) else class_name(r) for r in rules]


def _limit_parts(stored: str | None) -> tuple[str | None, int | None]:
    """A limit's stored form (``jobs.rates.definition``) as (rate, max_concurrency)."""
    if not stored:
        return None, None
    count, period, most = (int(x) for x in stored.split()[:3])
    return (f"{count}/{period / 1000:g}s" if count else None), (most or None)


def _callable_name(f: Callable[..., object] | None) -> str | None:
    if f is None:
        return None
    return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', repr(f))}"


def describe(fn: JobFunction[Any, Any], defaults: JobDefaults) -> FunctionOptions:
    """What ``fn`` runs with when its enqueue sets nothing, under these defaults."""
    policy = resolve(None, fn, defaults)
    o = fn.job_options
    rate, most = _limit_parts(o.limit)
    return FunctionOptions(
        queue=o.queue or defaults.queue, timeout=policy.timeout,
        soft_timeout=policy.soft_timeout, max_attempts=policy.max_attempts,
        result_ttl=policy.result_ttl, priority=o.priority, backoff=policy.backoff,
        retry_on=rule_names(policy.retry_on), dont_retry_on=rule_names(policy.dont_retry_on),
        rate_limit=rate, max_concurrency=most, unique_for=o.unique_for, on_dead=o.on_dead,
        should_queue=_callable_name(o.should_queue), encrypt=o.encrypt)


def publish_functions(broker: Broker, functions: dict[str, FunctionOptions]) -> None:
    """Record the loaded functions' options (a function another host still runs keeps
    its entry: entries are overwritten, never removed)."""
    if not functions:
        return
    with translated(broker.url):
        broker.client.hset(broker.keys.functions(),
                           mapping={n: _encoder.encode(o) for n, o in functions.items()})


def published_functions(broker: Broker) -> dict[str, FunctionOptions]:
    with translated(broker.url):
        raw = broker.client.hgetall(broker.keys.functions())
    out = {}
    for name, value in raw.items():
        try:
            out[name.decode()] = _decoder.decode(value)
        except msgspec.DecodeError:
            continue  # written by another version: unknown here, not fatal
    return out


def effective_max_attempts(spec: JobSpec | None, published: FunctionOptions | None,
                           defaults: JobDefaults) -> int:
    if spec is not None and spec.max_attempts is not None:
        return spec.max_attempts
    return published.max_attempts if published is not None else defaults.max_attempts


def options_of(spec: JobSpec | None, broker: Broker,
               published: dict[str, FunctionOptions] | None = None) -> dict[str, Any]:
    """The effective ``max_attempts``, ``timeout`` and retry policy of a job, and whether
    its function's options are known (published) or only the defaults were used."""
    functions = published if published is not None else published_functions(broker)
    known = functions.get(spec.function) if spec is not None else None
    d = broker.defaults
    timeout = spec.timeout if spec is not None and spec.timeout is not None else (
        known.timeout if known is not None else d.timeout)
    backoff = (spec.backoff if spec is not None and spec.backoff is not None
               else known.backoff if known is not None and known.backoff is not None
               else d.backoff)
    rules = {}
    for name in ("retry_on", "dont_retry_on"):
        own = getattr(spec, name) if spec is not None else None
        rules[name] = own if own is not None else (getattr(known, name) if known else [])
    return {"max_attempts": effective_max_attempts(spec, known, d), "timeout": timeout,
            "backoff": msgspec.to_builtins(backoff), **rules,
            "function_known": known is not None}
