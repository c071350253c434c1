"""Worker-side primitives: claim, run, write the outcome; plus promotion and reclaim.

The supervisor's children are built from these; ``Worker.run_until_empty`` runs jobs in
this process for tests and scripts (no hard timeouts: those need the supervisor).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

import msgspec

import jobs.tracing as tracing
from jobs.errors import ConfigurationError, JobsError, StaleToken
from jobs.execute import Resolved, execute, resolve_job
from jobs.hooks import failed_here, find_function, on_dead_job, on_failure_job
from jobs.policy import Outcome, Policy, Verdict, after_failure, resolve
from jobs.records import AttemptError, Claimed, ErrorKind, ExpiredLease, JobSpec
from jobs.store.broker import Broker, default_broker
from jobs.store.completions import Completion
from jobs.store.keys import check_name
from jobs.tally import Tally

log = logging.getLogger(__name__)

DEFAULT_LEASE = 30.0
IDLE_WAIT = 3.0  # the promoter's longest sleep when nothing is scheduled


def worker_name() -> str:
    """host:pid:nonce — unique even when a pid is reused after a restart."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


def record_failure(broker: Broker, job_id: str, queue: str, token: str, attempt: int,
                   spec: JobSpec | None, errors: Sequence[AttemptError], error: AttemptError,
                   *, only_if_expired: bool = False) -> str | None:
    """Account a failure that happened outside the function (kill, crash, lost worker).

    Returns the new state (``scheduled`` or ``dead``), or None if the token was no longer the job's.
    """
    fn, _ = find_function(spec.function) if spec else (None, "")
    policy = resolve(spec, fn, broker.defaults)
    retry_in = after_failure(policy, attempt, None) if spec else None
    hooks = [h for h in (on_dead_job(policy, job_id, broker),
                         on_failure_job(fn, policy, job_id, queue, broker)) if h is not None] \
        if retry_in is None else []
    return broker.fail(job_id, queue, token, [*errors, error], retry_in,
                       function=spec.function if spec else "?",
                       only_if_expired=only_if_expired, hooks=hooks)


def account_failure(broker: Broker, job_id: str, queue: str, token: str,
                    error: AttemptError) -> str | None:
    """Account a job whose worker was killed or crashed; no-op if the token lost the job."""
    record = broker.jobs.fetch(job_id)
    if record is None or record.token != token or record.state != "active":
        return None
    error = msgspec.structs.replace(error, attempt=record.attempts)
    return record_failure(broker, job_id, queue, token, record.attempts, record.spec,
                          record.errors, error)


def reclaim(broker: Broker, queues: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Put back jobs whose lease expired (attempt spent, reason "worker lost").

    Safe from any number of processes on any number of hosts: each move re-checks the
    token and the expiry inside Redis. Returns ``(job_id, new_state)`` pairs.
    """
    queues = list(queues) if queues is not None else broker.jobs.known_queues()
    if not queues:
        return []
    moved = []
    for lease in broker.maintenance.expired(queues):
        new_state = _reclaim_one(broker, lease)
        if new_state:
            moved.append((lease.id, new_state))
    return moved


def _reclaim_one(broker: Broker, lease: ExpiredLease) -> str | None:
    error = AttemptError(
        attempt=lease.attempts, kind=ErrorKind.LOST, type="WorkerLost",
        message="worker lost: its lease expired before the job finished "
                "(the worker or its host died, or lost its Redis connection)",
        at=time.time(),
    )
    return record_failure(broker, lease.id, lease.queue, lease.token, lease.attempts,
                          lease.spec, lease.errors, error, only_if_expired=True)


def run_promoter(broker: Broker, stop: threading.Event,
                 queues: Callable[[], Sequence[str]] | None = None) -> None:
    """Promote due delayed jobs until ``stop`` is set; meant for a background thread.

    Sleeps locally until the next due time (server clock, relative wait) and is woken
    through Redis when an earlier job is scheduled, so lateness stays in milliseconds.
    """
    maintenance = broker.maintenance
    while not stop.is_set():
        names = list(queues()) if queues else broker.jobs.known_queues()
        _, next_in = maintenance.promote(names) if names else maintenance.release_limits()
        if next_in is not None and next_in < 0.25:
            stop.wait(next_in)
        else:
            # BLPOP timeouts fire on the server's timer tick (~100 ms): wake early, then
            # finish the wait locally above. An earlier due time wakes the BLPOP at once.
            maintenance.wait_for_timers(IDLE_WAIT if next_in is None
                                        else min(next_in - 0.15, IDLE_WAIT))


def log_end(job: Claimed, outcome: Outcome, state: str) -> None:
    """The line a job's end gets with ``[worker] log_jobs``: how it ended and in what time."""
    name = job.spec.function if job.spec else "?"
    took = f"in {outcome.duration:.3f} s"
    e = outcome.error
    why = f"{e.type}: {e.message}" if e else ""
    if state == "completed":
        log.info("job %s %s completed %s", job.id, name, took)
    elif state == "scheduled":
        log.info("job %s %s failed %s (attempt %d), retrying in %.3g s: %s", job.id, name,
                 took, job.attempt, outcome.retry_in or 0.0, why)
    else:
        log.info("job %s %s %s %s (attempt %d): %s", job.id, name, state, took, job.attempt,
                 why)


class Worker:
    """Claims from queues in order (or by weight), runs jobs, writes outcomes."""

    def __init__(self, queues: Sequence[str] | None = None, *, broker: Broker | None = None,
                 name: str | None = None, lease: float = DEFAULT_LEASE,
                 weights: Sequence[float] | None = None) -> None:
        self.broker = broker or default_broker()
        # No queues given: the default queue ([defaults] queue).
        self.queues = [check_name("queue", q) for q in queues or [self.broker.defaults.queue]]
        if weights is not None and len(weights) != len(self.queues):
            raise ConfigurationError("weights must give one number per queue")
        self.weights = list(weights) if weights else None
        self.name = name or worker_name()
        self.lease = lease
        self._tokens = itertools.count(1)
        self.tally = Tally()
        # True only while blocked waiting for work: a stop request may interrupt then,
        # and at no other moment. The claim sent with the wait may have run by then: its
        # token is published (``claiming``), so whatever it took is given back.
        self.waiting = False
        # Set by the process hosting the worker when asked to stop: no wait starts after.
        self.stopping = False
        self.pending_token: str | None = None
        self.unanswered: str | None = None  # the token of a claim whose call raised
        # Told each claim token before the claim is sent, and "" once a claim came back
        # empty (the supervisor's child publishes it, so a job claimed by a worker killed
        # before it could say so is given back).
        self.claiming: Callable[[str], None] = lambda token: None
        # One log line as each job starts and ends ([worker] log_jobs); off: one bool check.
        self.log_jobs = False
        # Told the seconds an on_failure hook may run before it starts, and 0 after it:
        # the supervisor's child shows that as a deadline, so a hook that hangs is killed.
        self.hook_deadline: Callable[[float], None] = lambda seconds: None
        self._reported: str | None = None  # the claim token whose end was last reported
        # Runs are traced when a tracer provider is set before the worker starts (in a job
        # module, imported before the fork): decided once, so a worker without one pays
        # nothing per job.
        self._traced = tracing.tracer() is not None

    def _order(self) -> list[str]:
        if not self.weights:
            return self.queues
        # Weighted order without replacement: a heavier queue is tried first more often.
        keys = [random.random() ** (1.0 / w) if w > 0 else 0.0 for w in self.weights]
        return [q for _, q in sorted(zip(keys, self.queues, strict=True), reverse=True)]

    def _token(self) -> str:
        return f"{self.name}#{next(self._tokens)}"

    def claim(self, wait: float = 0.0) -> Claimed | None:
        """One job with a lease, or None after ``wait`` seconds; blocks on Redis, never polls.

        An idle worker sends its next claim together with its blocking wait, so the claim
        runs on the server the moment an enqueue wakes it. A claim whose reply never came
        (the call raised) is asked again with the same token: a job it took is returned,
        not stranded.
        """
        deadline = time.monotonic() + wait
        token, resent = self._claim_token()
        self.claiming(token)
        job = self.broker.claim(self._order(), token, self.lease, resent=resent)
        self.unanswered = None
        while job is None:
            self.claiming("")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.flush_counts()  # going idle: publish what was counted
            token, _ = self._claim_token()
            self.claiming(token)  # published before a stop request may interrupt
            self.waiting = True  # from here a stop request interrupts the wait...
            try:
                if self.stopping:  # ...and one that came before is seen here
                    return None
                job = self.broker.wait_and_claim(self.queues, remaining, self._order(), token,
                                                 self.lease)
            finally:
                self.waiting = False
            self.unanswered = None
        return job

    def give_back_unanswered(self) -> None:
        """Give back what a claim whose reply never came took, if it took anything: for a
        worker about to stop claiming for a while (its supervisor paused its pool)."""
        token = self.unanswered
        if token is None:
            return
        for job_id, queue, held_with in self.broker.claimed_by(token, self.queues):
            self.broker.release_claim(job_id, queue, held_with)
        self.unanswered = None

    def _claim_token(self) -> tuple[str, bool]:
        """A fresh token, or the one of a claim still unanswered (and so a resend)."""
        if self.unanswered is not None:
            return self.unanswered, True
        self.unanswered = self._token()
        return self.unanswered, False

    def flush_counts(self) -> None:
        self.tally.flush(self.broker)

    def finish_and_claim(self, job: Claimed, outcome: Outcome,
                         policy: Policy) -> tuple[str | None, Claimed | None]:
        """Write the outcome and claim the next job: one round trip when the job succeeded.

        Returns the job's new state (None when its token was no longer the job's) and the next
        claimed job, if any.
        """
        if outcome.verdict is not Verdict.COMPLETED:
            try:
                state: str | None = self.finish(job, outcome, policy)
            except StaleToken as exc:
                log.warning("%s", exc)
                state = None
            return state, self.claim()
        # Remembered until the reply arrives: if it never does, ``recover_claim`` asks
        # the server what this token took, so a job claimed with it is not stranded.
        self.pending_token = self._token()
        self.claiming(self.pending_token)
        counts = self.tally.send_due()  # due counts ride along: no trip of their own
        if counts is None:
            done, following = self.broker.finish_and_claim(
                job, outcome.result, policy.result_ttl, outcome.duration, self._order(),
                self.pending_token, self.lease)
        else:
            try:
                done, following = self.broker.finish_and_claim(
                    job, outcome.result, policy.result_ttl, outcome.duration, self._order(),
                    self.pending_token, self.lease, counts.fields, counts.answered)
            finally:
                counts.settle()
        self.pending_token = None
        if following is None:
            self.claiming("")
        if done:
            self.tally.completed(job.queue, job.spec.function if job.spec else "?",
                                 outcome.duration)
            if self.log_jobs:
                log_end(job, outcome, "completed")
        else:
            log.warning("job %s was taken back before this worker wrote its result; the result "
                        "was discarded", job.id)
        return ("completed" if done else None), following

    def fresh_token(self) -> str:
        """A claim token of this worker for a call made on another thread (claim-ahead)."""
        return self._token()

    def finish_batch(self, done: Sequence[Completion], want: int,
                     resent: bool = False, token: str | None = None) -> list[Claimed]:
        """Write the successes ``done`` and claim up to ``want`` jobs, in one round trip.

        ``resent``: ask again after a call whose reply was lost (its outcomes written since
        with ``finish``): the jobs that call claimed are returned, not claimed twice.
        ``token``: a call of another thread than the worker's own (claim-ahead), which
        leaves the worker's pending claim alone.
        """
        if token is None:
            if not resent:
                self.pending_token = self._token()
            token = self.pending_token
        assert token is not None
        if want:
            self.claiming(token)
        counts = self.tally.send_due() if not resent else None
        try:
            written, claimed = self.broker.finish_batch(
                done, want, self._order(), token, self.lease, resent=resent,
                counts=counts.fields if counts else None,
                counted=counts.answered if counts else None)
        finally:
            if counts is not None:
                counts.settle()
        if token == self.pending_token:
            self.pending_token = None
        if want and not claimed:
            self.claiming("")
        for c, state in zip(done, written, strict=True):
            if state == "now":  # counted and logged once, by the call that wrote it
                self.tally.completed(c.job.queue, c.job.spec.function if c.job.spec else "?",
                                     c.duration)
                if self.log_jobs:
                    log_end(c.job, Outcome(verdict=Verdict.COMPLETED, result=c.result,
                                           duration=c.duration), "completed")
            elif state is None:
                log.warning("job %s was taken back before this worker wrote its result; the "
                            "result was discarded", c.job.id)
        return claimed

    def complete(self, c: Completion) -> bool:
        """Write one success on its own (a batch call's reply was lost); False when its
        token no longer held the job."""
        written = self.broker.complete(c.job, c.result, c.result_ttl, c.duration)
        if written == "now":
            self._count(c.job, Outcome(verdict=Verdict.COMPLETED, result=c.result,
                                       duration=c.duration))
        elif written is None:
            log.warning("job %s was taken back before this worker wrote its result; the "
                        "result was discarded", c.job.id)
        return written is not None

    def recover_claim(self) -> Claimed | None:
        """After a ``finish_and_claim`` whose reply was lost (and the outcome written
        since with ``finish``): the job that call claimed, if it ran, else a new claim."""
        if self.pending_token is None:
            return None
        job = self.broker.claim(self._order(), self.pending_token, self.lease, resent=True)
        self.pending_token = None
        return job

    def _count(self, job: Claimed, outcome: Outcome) -> None:
        """Count a written completion. Counting never fails the caller: a flush Redis
        refuses (full, outage) keeps its counts for the next one."""
        self.tally.completed(job.queue, job.spec.function if job.spec else "?", outcome.duration)
        if self.tally.due():
            try:
                self.flush_counts()
            except JobsError as exc:
                log.warning("outcome counters not written yet (kept for the next flush): %s",
                            exc)

    def execute(self, job: Claimed, resolved: Resolved | None = None) -> tuple[Outcome, Policy]:
        if self.log_jobs:
            log.info("job %s %s started (attempt %d)", job.id,
                     job.spec.function if job.spec else "?", job.attempt)
        if self._traced:
            return tracing.run(job, lambda: execute(job, self.broker, self.name, resolved))
        return execute(job, self.broker, self.name, resolved)

    def finish(self, job: Claimed, outcome: Outcome, policy: Policy) -> str:
        """Write the outcome with the claim token; ``StaleToken`` if the job was taken back."""
        b = self.broker
        if outcome.verdict is Verdict.COMPLETED:
            written = b.complete(job, outcome.result, policy.result_ttl, outcome.duration)
            state: str | None = "completed" if written else None
            if written == "now":  # not when a resend finds it written: count it once
                self._count(job, outcome)
        else:
            assert outcome.error is not None
            hook = on_dead_job(policy, job.id, b) if outcome.verdict is Verdict.DEAD else None
            state = b.fail(job.id, job.queue, job.token, [*job.errors, outcome.error],
                           outcome.retry_in, hooks=[hook] if hook else [],
                           function=job.spec.function if job.spec else "?")
        if state is None:
            raise StaleToken(
                f"job {job.id} was taken back (lease expired or canceled) before this worker "
                "wrote its outcome; the outcome was discarded"
            )
        if job.token != self._reported:  # a resend of a written outcome reports nothing
            self._reported = job.token
            if self.log_jobs:
                log_end(job, outcome, state)
            if state == "dead" and outcome.verdict is Verdict.DEAD:
                self._failed(job, outcome, policy)
        return state

    def _failed(self, job: Claimed, outcome: Outcome, policy: Policy) -> None:
        """Call the dead job's ``on_failure`` here, under the job's hard timeout."""
        self.hook_deadline(policy.timeout)
        try:
            failed_here(job, outcome, policy, self.broker)
        finally:
            self.hook_deadline(0.0)

    def release(self, job: Claimed) -> bool:
        return self.broker.release(job)

    def run_one(self, job: Claimed) -> str:
        """Run a claimed job here; the lease is first stretched past its timeout."""
        resolved = resolve_job(job, self.broker)
        timeout = resolved[1].timeout
        if timeout + 30 > self.lease:
            self.broker.renew([(job.id, job.queue, job.token)], timeout + 30)
        outcome, policy = self.execute(job, resolved)
        return self.finish(job, outcome, policy)

    def run_until_empty(self, max_jobs: int | None = None) -> Counter[str]:
        """Run jobs here until the queues hold nothing runnable; count outcomes by state."""
        done: Counter[str] = Counter()
        while max_jobs is None or sum(done.values()) < max_jobs:
            self.broker.maintenance.promote(self.queues)
            job = self.claim()
            if job is None:
                break
            try:
                done[self.run_one(job)] += 1
            except StaleToken as exc:
                log.warning("%s", exc)
                done["stale"] += 1
        self.flush_counts()
        return done
