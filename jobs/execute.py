"""Running one claimed job in this process and classifying what happened."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec

from jobs.aio import run_coroutine
from jobs.context import JobContext, reset_current, set_current
from jobs.encryption.envelope import is_sealed
from jobs.errors import DecryptionError, JobTimeout, UnknownFunction
from jobs.policy import Outcome, Policy, Verdict, after_failure, error_of, resolve, safe_str
from jobs.records import AttemptError, Claimed, ErrorKind, any_decoder, encoder
from jobs.registry import lookup
from jobs.store.broker import Broker

if TYPE_CHECKING:  # annotations only: jobs.decorator enqueues, which may run a job here
    from jobs.decorator import JobFunction


def invalid(job: Claimed, message: str, worker: str, type_: str = "InvalidJob",
            exc: BaseException | None = None) -> Outcome:
    """A permanent failure found before or after the function ran: no retry can fix it."""
    error = AttemptError(
        attempt=job.attempt, kind=ErrorKind.INVALID, type=type_, message=message,
        at=time.time(), worker=worker,
    )
    return Outcome(verdict=Verdict.DEAD, error=error, exception=exc)


def find(job: Claimed) -> tuple[JobFunction[Any, Any] | None, str]:
    """The registered function for a claimed job, or None and the reason it cannot run."""
    if job.corrupt is not None or job.spec is None:
        return None, (f"job record is corrupt ({job.corrupt or 'unreadable spec'}): damaged, "
                      "or written by a newer jobvisor than this worker")
    try:
        return lookup(job.spec.function), ""
    except UnknownFunction as exc:
        return None, str(exc)


Resolved: TypeAlias = "tuple[JobFunction[Any, Any] | None, Policy]"


def resolve_job(job: Claimed, broker: Broker) -> Resolved:
    """The job's registered function (None if unknown) and its effective options."""
    fn, _ = find(job)
    return fn, resolve(job.spec, fn, broker.defaults)


def execute(job: Claimed, broker: Broker, worker: str,
            resolved: Resolved | None = None) -> tuple[Outcome, Policy]:
    """Run the job's function; never raises for anything the job itself does.

    ``resolved`` is ``resolve_job``'s answer when the caller already needed it.
    """
    fn, policy = resolved or resolve_job(job, broker)
    try:
        return _execute(job, fn, policy, broker, worker), policy
    except JobTimeout as exc:
        # The soft timeout fired outside the function (binding or encoding its result).
        retry_in = after_failure(policy, job.attempt, exc)
        outcome = Outcome(verdict=Verdict.DEAD if retry_in is None else Verdict.RETRY,
                          error=error_of(exc, job.attempt, 0.0, worker), retry_in=retry_in,
                          exception=exc)
        if job.spec is not None and job.spec.sealed is not None:
            # No key here (ValueError): it never got to the arguments either.
            with contextlib.suppress(ValueError):
                outcome = sealed_outcome(job.id, outcome, broker)
        return outcome, policy


def _execute(job: Claimed, fn: JobFunction[Any, Any] | None, policy: Policy,
             broker: Broker, worker: str) -> Outcome:
    if fn is None or job.spec is None or job.corrupt is not None:
        _, problem = find(job)
        kind = "CorruptRecord" if job.corrupt or job.spec is None else "UnknownFunction"
        return invalid(job, problem, worker, kind)
    try:
        clear = opened(job, broker)
    except (DecryptionError, ValueError) as exc:  # ValueError: keys misconfigured here
        return invalid(job, str(exc), worker, UNREADABLE)
    outcome = run_attempt(clear, fn, policy, JobContext(clear, policy.max_attempts, broker),
                          worker)
    return outcome if job.spec.sealed is None else sealed_outcome(job.id, outcome, broker)


UNREADABLE = "DecryptionError"  # the error type of a job whose payload cannot be decrypted


def opened(job: Claimed, broker: Broker) -> Claimed:
    """The job with its arguments, and the parent result it is passed, decrypted."""
    assert job.spec is not None
    spec = broker.sealer.open_spec(job.id, job.spec)
    given = job.parent_result
    if given is not None and is_sealed(given):  # sealed with the parent's id
        parent = broker.jobs.passing_parent(job.id)
        given = broker.sealer.open_result(parent or "", given)
    if spec is job.spec and given is job.parent_result:
        return job
    return msgspec.structs.replace(job, spec=spec, parent_result=given)


def sealed_outcome(job_id: str, outcome: Outcome, broker: Broker) -> Outcome:
    """An encrypted job's outcome as stored: its result sealed, and its error's message
    and traceback unless ``[encryption] clear_errors``. (Errors found before its
    arguments were decrypted name keys and functions, never the payload: left readable.)"""
    sealer = broker.sealer
    changes: dict[str, Any] = {}
    if outcome.verdict is Verdict.COMPLETED:
        changes["result"] = sealer.seal_result(job_id, outcome.result)
    error = outcome.error
    if error is not None and not sealer.settings.clear_errors:
        changes["error"] = sealer.seal_error(job_id, error)
    return msgspec.structs.replace(outcome, **changes) if changes else outcome


def run_attempt(job: Claimed, fn: JobFunction[Any, Any], policy: Policy, ctx: JobContext,
                worker: str) -> Outcome:
    """Bind the arguments, call the function with ``ctx`` current, classify the result:
    the same for a worker and for a job run inline (``jobs.inline``)."""
    assert job.spec is not None
    given = job.spec.args
    if job.parent_result is not None:
        # A chain link (pass_result=True): the parent's return value comes first.
        given = [any_decoder.decode(job.parent_result), *given]
    try:
        args, kwargs = fn.binder.bind(given, job.spec.kwargs, ctx)
    except (TypeError, msgspec.ValidationError) as exc:
        return invalid(job, f"arguments do not match {fn.name}: {safe_str(exc)}", worker,
                       "ValidationError", exc)
    token = set_current(ctx)
    started = time.perf_counter()
    try:
        value = fn.func(*args, **kwargs)
        if fn.is_async:  # the call made the coroutine: run it on this process's loop
            value = run_coroutine(value)
    except (Exception, SystemExit, asyncio.CancelledError) as exc:
        duration = time.perf_counter() - started
        retry_in = after_failure(policy, job.attempt, exc)
        verdict = Verdict.DEAD if retry_in is None else Verdict.RETRY
        return Outcome(verdict=verdict, error=error_of(exc, job.attempt, duration, worker),
                       retry_in=retry_in, duration=duration, exception=exc)
    finally:
        reset_current(token)
    duration = time.perf_counter() - started
    try:
        result = encoder.encode(value)
    except (TypeError, OverflowError, ValueError, RecursionError) as exc:
        return invalid(job, f"return value of {fn.name} cannot be stored: {safe_str(exc)}", worker,
                       "UnencodableResult", exc)
    return Outcome(verdict=Verdict.COMPLETED, result=result, duration=duration)
