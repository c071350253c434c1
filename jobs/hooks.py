"""What runs when a job dies: its ``on_dead`` job and its ``on_failure`` hook.

``on_dead`` is another job, enqueued in the same Lua step as the death, so it runs
exactly once. ``on_failure(ctx, error)`` is a function called in a worker:

- a death the worker sees (the last attempt raised, ``Fail``, ``dont_retry_on``,
  arguments that do not validate) calls it in that worker, right after the death is
  written, with the exception;
- a death no worker sees (killed at its hard timeout, crashed, lost with its host) is
  written by a supervisor, which never runs job code. With that death, in the same step,
  it enqueues the internal job ``jobs.hooks:on_failure`` (id ``<id>.on_failure``) on the
  dead job's queue; the worker that claims it calls the hook with a ``JobKilled`` error.

Either way the hook runs under the job's hard timeout, and a hook that raises is logged:
the job stays dead.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from typing import Any

from jobs.aio import run_coroutine
from jobs.context import JobContext, reset_current, set_current
from jobs.decorator import JobFunction, job
from jobs.enqueue import sealer_for
from jobs.errors import JobKilled, JobsError, UnknownFunction
from jobs.options import Call, EnqueueOptions, Prepared, prepare
from jobs.policy import Outcome, Policy, resolve
from jobs.records import Claimed, JobRecord
from jobs.registry import lookup
from jobs.store.broker import Broker

log = logging.getLogger(__name__)

MAX_ID = 128


def hook_id(job_id: str, kind: str = "on_dead") -> str:
    """``<id>.<kind>``, or a digest of the id when that would exceed the id length limit."""
    hook = f"{job_id}.{kind}"
    if len(hook) <= MAX_ID:
        return hook
    return f"{hashlib.blake2b(job_id.encode(), digest_size=12).hexdigest()}.{kind}"


def find_function(name: str) -> tuple[JobFunction[Any, Any] | None, str]:
    try:
        return lookup(name), ""
    except UnknownFunction as exc:
        return None, str(exc)


def _hook_job(call: Call, queue: str, priority: int, job_id: str,
              broker: Broker) -> Prepared | None:
    """A hook job to enqueue with a death; one that cannot be built (bad name, oversized)
    is logged and skipped: it must never stop the death itself from being written."""
    try:
        return prepare(call, default_queue=queue, default_priority=priority,
                       max_bytes=broker.defaults.max_payload_bytes,
                       sealer=sealer_for(call, find_function(call.function)[0], broker))
    except (JobsError, TypeError) as exc:
        log.error("hook %s for job %s cannot be enqueued: %s", call.function, job_id, exc)
        return None


def on_dead_job(policy: Policy, job_id: str, broker: Broker) -> Prepared | None:
    """The ``on_dead`` job to enqueue with a death: ``policy.on_dead(job_id)``."""
    if policy.on_dead is None:
        return None
    fn, _ = find_function(policy.on_dead)
    queue = (fn.job_options.queue if fn else None) or broker.defaults.queue
    priority = fn.job_options.priority if fn else 10
    call = Call(policy.on_dead, (job_id,), {}, EnqueueOptions(job_id=hook_id(job_id)))
    return _hook_job(call, queue, priority, job_id, broker)


HOOK_FUNCTION = "jobs.hooks:on_failure"


def on_failure_job(fn: JobFunction[Any, Any] | None, policy: Policy, job_id: str, queue: str,
                   broker: Broker) -> Prepared | None:
    """For a death no worker saw: the job that calls ``fn``'s ``on_failure`` in a worker,
    on the dead job's queue (whose workers load its function) and under its timeout."""
    if fn is None or fn.job_options.on_failure is None:
        return None
    call = Call(HOOK_FUNCTION, (job_id,), {},
                EnqueueOptions(job_id=hook_id(job_id, "on_failure"), timeout=policy.timeout))
    return _hook_job(call, queue, fn.job_options.priority, job_id, broker)


def call_on_failure(fn: JobFunction[Any, Any], ctx: JobContext, error: BaseException) -> bool:
    """Call ``fn``'s hook with the dead job's context as ``jobs.current()``; a hook that
    raises is logged. False when ``fn`` has no hook."""
    hook = fn.job_options.on_failure
    if hook is None:
        return False
    token = set_current(ctx)
    try:
        value = hook(ctx, error)
        if inspect.isawaitable(value):
            run_coroutine(_awaited(value))
    except (Exception, SystemExit, asyncio.CancelledError):
        log.exception("on_failure hook of job %s (%s) raised; the job stays dead", ctx.job_id,
                      fn.name)
    finally:
        reset_current(token)
    return True


async def _awaited(value: Any) -> Any:
    return await value


def failed_here(job: Claimed, outcome: Outcome, policy: Policy, broker: Broker) -> None:
    """The death of ``job`` was just written by this worker: call its ``on_failure``."""
    fn, _ = find_function(job.spec.function) if job.spec else (None, "")
    if fn is None or fn.job_options.on_failure is None:
        return
    error = outcome.exception
    if error is None:
        e = outcome.error
        error = JobKilled(e.kind if e else "exception", e.message if e else "no error recorded")
    call_on_failure(fn, JobContext(job, policy.max_attempts, broker), error)


def _as_claimed(r: JobRecord) -> Claimed:
    return Claimed(id=r.id, queue=r.queue, token=r.token or "", spec=r.spec,
                   attempt=r.attempts, priority=r.priority, errors=r.errors,
                   enqueued_at=r.enqueued_at or 0.0, started_at=r.started_at or 0.0)


@job(max_attempts=1)
def on_failure(ctx: JobContext, job_id: str) -> bool:
    """Call the ``on_failure`` hook of dead job ``job_id``, whose death no worker saw;
    True when a hook was called."""
    broker = ctx.broker
    record = broker.jobs.fetch(job_id)
    if record is None or record.spec is None:
        log.warning("on_failure of job %s not called: its record is gone or unreadable", job_id)
        return False
    fn, problem = find_function(record.spec.function)
    if fn is None:
        log.warning("on_failure of job %s not called: %s", job_id, problem)
        return False
    last = record.errors[-1] if record.errors else None
    error = JobKilled(last.kind if last else "lost", last.message if last else "worker lost")
    policy = resolve(record.spec, fn, broker.defaults)
    return call_on_failure(fn, JobContext(_as_claimed(record), policy.max_attempts, broker),
                           error)
