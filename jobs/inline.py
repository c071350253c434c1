"""Conditional dispatch: run a job at once in the calling process instead of queueing it.

``fn.options(inline=True).enqueue(...)`` (or ``Queue(...).options(inline=True)``) runs
the job here; ``@job(should_queue=predicate)`` does so whenever the predicate, called
with the job's arguments, returns a falsy value, and ``inline=False`` queues whatever the
predicate says. The call is checked and encoded as for the queue, its arguments decoded
and validated as a worker would, and the function run once with a job context; the
handle returned holds the outcome.

An inline run writes nothing to Redis (no record, no events, no counters, no ``on_dead``
job; ``Job.fetch(id)`` does not find it), so it works without a server. It is one
attempt: the caller is waiting, so a failure is not retried after a backoff but ends the
job ``dead`` with its error (``result()`` raises ``JobFailed``). Hard and soft timeouts are
not enforced: that takes a supervisor, as for ``Worker.run_until_empty``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import msgspec

import jobs.tracing as tracing
from jobs.context import JobContext, Progress
from jobs.enqueue import enqueue_call, prepare_call
from jobs.errors import ConfigurationError, UnknownFunction
from jobs.execute import run_attempt
from jobs.job import Job
from jobs.options import Call
from jobs.policy import Verdict, resolve
from jobs.records import Claimed, JobRecord, spec_decoder
from jobs.registry import find, lookup
from jobs.states import JobState
from jobs.store.broker import Broker, default_broker

if TYPE_CHECKING:  # annotations only: jobs.decorator imports this module
    from jobs.decorator import JobFunction

log = logging.getLogger(__name__)

# Options that only mean something for a queued job: a call with any is always queued.
QUEUE_ONLY = ("delay", "at", "depends_on", "unique_for", "unique_key")


def dispatch(call: Call, broker: Broker | None = None) -> Job:
    """Enqueue one call, or run it here when its options or its function say so."""
    broker = broker or default_broker()
    fn = find(call.function)
    if runs_inline(call, fn):
        return run_inline(call, broker)
    return enqueue_call(call, broker)


def runs_inline(call: Call, fn: JobFunction[Any, Any] | None) -> bool:
    """``inline=`` when given; else the function's ``should_queue``, asked only for a call
    that needs nothing of the queue (no delay, dependencies or uniqueness)."""
    opts = call.options
    if opts.inline is not None:
        if not isinstance(opts.inline, bool):
            raise ConfigurationError(f"inline must be True or False, got {opts.inline!r}")
        return opts.inline
    predicate = fn.job_options.should_queue if fn is not None else None
    if predicate is None or needs_queue(call, fn):
        return False
    return not predicate(*call.args, **call.kwargs)


def needs_queue(call: Call, fn: JobFunction[Any, Any] | None) -> list[str]:
    """The options of this call that only a queued job can honour. A function's own
    ``unique_for`` is not one: an inline run leaves nothing to be unique against."""
    opts = call.options
    own = fn.job_options.unique_for if fn is not None else None
    return [name for name in QUEUE_ONLY if (value := getattr(opts, name)) is not None
            and not (name == "unique_for" and value == own)]


class InlineContext(JobContext):
    """The context of a job run inline: progress and log lines stay in this process."""

    def __init__(self, job: Claimed, max_attempts: int, broker: Broker) -> None:
        super().__init__(job, max_attempts, broker)
        self.last_progress: Any = None

    def progress(self, done: float, total: float | None = None,
                 message: str | None = None) -> None:
        text = (message or "")[:500]
        self.last_progress = msgspec.to_builtins(
            Progress(done=done, total=total, message=text or None))

    def log(self, message: str) -> None:
        log.info("job %s (inline): %s", self.job_id, message)


class InlineJob(Job):
    """The handle of a job run inline: its outcome is held here, not in Redis."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.record.state} {self.function} (ran inline)>"

    def refresh(self) -> InlineJob:
        return self

    def result(self, timeout: float | None = None) -> Any:
        """The return value; ``JobFailed`` when the run failed (never waits)."""
        return self._final_value()

    def cancel(self, reason: str = "canceled by request") -> bool:
        return False  # it has already ended


def run_inline(call: Call, broker: Broker) -> InlineJob:
    """Run one call here, once; raise only for what would refuse it at enqueue."""
    try:
        fn = lookup(call.function)
    except UnknownFunction as exc:
        raise UnknownFunction(
            f"cannot run {call.function} inline: {exc} (an inline run needs the function "
            "registered in this process: import its module first)") from None
    queued_only = needs_queue(call, fn)
    if queued_only:
        raise ConfigurationError(
            f"{call.function}: inline=True runs the job now, in this process, but "
            f"{', '.join(queued_only)} need the queue: drop inline=True or those options")
    # Checked and encoded as a queued job is, without what only the queue honours.
    plain = msgspec.structs.replace(call, options=msgspec.structs.replace(
        call.options, inline=None, unique_for=None))
    # The checks and encoding of a queued job (never encrypted: nothing is stored).
    p = prepare_call(plain, broker, sealing=False)
    spec = spec_decoder.decode(p.spec)  # the arguments as a worker receives them
    policy = resolve(spec, fn, broker.defaults)
    started = time.time()
    job = Claimed(id=p.id, queue=p.queue, token="inline", spec=spec, attempt=1,
                  priority=p.priority, errors=(), enqueued_at=started, started_at=started)
    ctx = InlineContext(job, policy.max_attempts, broker)
    worker = f"inline:{socket.gethostname()}:{os.getpid()}"
    outcome, _ = tracing.run(job, lambda: (run_attempt(job, fn, policy, ctx, worker), None))
    done = outcome.verdict is Verdict.COMPLETED
    record = JobRecord(
        id=p.id, queue=p.queue, state=JobState.COMPLETED if done else JobState.DEAD,
        priority=p.priority, attempts=1, spec=spec,
        errors=(outcome.error,) if outcome.error is not None else (),
        result=outcome.result if done else None, enqueued_at=started, started_at=started,
        finished_at=time.time(), progress=ctx.last_progress)
    return InlineJob(p.id, broker, record)
