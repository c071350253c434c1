"""A job's effective options, the same wherever they are shown.

A job's own options (set at enqueue) win; then the function's ``@job`` options and the
``[defaults]`` of the supervisors that run it, which each supervisor publishes when it
loads its job modules; then this process's defaults. The CLI, the library and any other
view answer from here, so ``show``, ``wait`` and the dead-letter list agree, and none of
them has to import the job modules to know a function's ``max_attempts``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from jobs.decorator import JobFunction
from jobs.policy import resolve
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


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(FunctionOptions)


def describe(fn: JobFunction[Any, Any], defaults: JobDefaults) -> FunctionOptions:
    policy = resolve(None, fn, defaults)
    return FunctionOptions(queue=fn.job_options.queue, timeout=policy.timeout,
                           soft_timeout=policy.soft_timeout,
                           max_attempts=policy.max_attempts, result_ttl=policy.result_ttl)


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
    """The effective ``max_attempts`` and ``timeout`` of a job, and where they come from."""
    functions = published if published is not None else published_functions(broker)
    known = functions.get(spec.function) if spec is not None else None
    d = broker.defaults
    timeout = spec.timeout if spec is not None and spec.timeout is not None else (
        known.timeout if known is not None else d.timeout)
    return {"max_attempts": effective_max_attempts(spec, known, d), "timeout": timeout,
            "function_known": known is not None}
