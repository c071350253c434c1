"""The child worker: claims jobs, runs them one at a time, writes the outcomes.

Runs in a forked process. It reports its state through its shared-memory slot; a
heartbeat thread keeps the slot fresh while the main thread is busy in job code, so a
job that holds the GIL (C code) stops the heartbeat and gets the child killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import encodings.idna  # noqa: F401  (see below)
import functools
import logging
import os
import random
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from importlib import import_module
from typing import Any

import psutil

import jobs
from jobs import BrokerError, BrokerUnavailable, JobTimeout, Worker, tracing
from jobs.execute import resolve_job
from jobs.policy import Outcome, Policy
from jobs.records import Claimed
from supervisor.errors import ExitCode
from supervisor.runtime.ahead import LEAD, SWITCH_INTERVAL, Ahead
from supervisor.runtime.child_base import ChildBase
from supervisor.runtime.connections import job_client, worker_client
from supervisor.runtime.slots import POKE, ChildState

log = logging.getLogger(__name__)

# Modules a child may import lazily soon after the fork are imported here, in the
# supervisor, before any of its threads starts: a child forked while a supervisor thread
# imports a module inherits that module's import lock held, and hangs on it for ever.
# encodings.idna is imported by socket.getaddrinfo the first time a host name is looked
# up (a worker connecting to rediss://localhost as a duties thread connects too).


class StopWaiting(BaseException):
    """Raised by the SIGTERM handler to end an idle worker's blocking wait at once."""


class Poked(BaseException):
    """Raised by the POKE handler to end a wait at once: the pool was paused or resumed."""


HEARTBEAT_EVERY = 1.0
# Handlers the worker relies on; a job that replaces one gets it put back after it.
GUARDED_SIGNALS = (signal.SIGTERM, signal.SIGALRM, signal.SIGINT, signal.SIGHUP,
                   signal.SIGUSR1, signal.SIGCHLD)
CLAIM_WAIT = 2.0  # an idle worker's blocking wait: also how soon it notices a stop
# Each wait is drawn within +-25 % of it: workers started together would otherwise end
# their waits together, every CLAIM_WAIT, a burst of claims on the server.
CLAIM_WAIT_SPREAD = 0.25
HOLD_NAP = 1.0  # a paused worker looks at its hold byte this often, besides when poked
TITLE_EVERY = 0.1  # the shortest time between two process titles of a busy worker
_PR_SET_PDEATHSIG = 1
# The handler as stored, without signal.getsignal's conversion to an enum (a failed enum
# lookup per Python handler: several microseconds per job for the check below).
_raw_handler: Callable[[int], Any] = import_module("_signal").getsignal


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(ExitCode.ERROR)


class Child(ChildBase):
    """Built in the supervisor before the fork (no side effects); ``run`` in the child.
    ``spec`` is its pool: the queues it claims from and the limits it runs under."""

    def run(self, parent: int) -> int:
        """Child main; returns the exit code. Never returns into the supervisor's code."""
        self._after_fork(parent)
        s = self.config.supervisor
        broker = self._connect()
        worker = Worker(self.spec.queues, broker=broker, lease=s.lease_timeout,
                        weights=self.spec.weights or None)
        self.worker = worker
        worker.claiming = functools.partial(self.slots.claiming, self.slot)  # no frame of ours
        worker.hook_deadline = self._hook_deadline
        worker.log_jobs = self.spec.log_jobs
        worker.tally.mirror = self._mirror_counts
        threading.Thread(target=self._heartbeat, daemon=True, name="heartbeat").start()
        if self.spec.claim_ahead:
            Ahead(worker, self.holding, self.claim_lock, lambda: self.running_id,
                  lambda: not self.stopping and not self.slots.held(self.slot))
            self.ahead = True
        if self.spec.claim_batch > 1 or self.ahead:
            # The holder thread must get its turn within the hold bound while a job runs
            # Python code (Python's default switch interval is 5 ms).
            sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
            self.holding.on_flush = self._flush_kept
            self.holding.start()
        self._idle(worker)
        claimed: Claimed | None = None  # the next job to run, if one was claimed
        while not self.stopping:
            if claimed is None:
                claimed = self._next_job(worker)
                if claimed is None:
                    continue
            if self.slots.held(self.slot):  # claimed as its pool was paused: not to run
                if self.holding.owns(claimed):
                    self.holding.give_back_starting()  # retried until Redis has it
                else:
                    self._give_back(worker, claimed)
                claimed = None
                self._settle_held(worker)
                continue
            outcome, policy = self._run_job(worker, claimed)
            claimed = self._finish(worker, claimed, outcome, policy)  # and claim the next
            if claimed is None and not self.holding.busy:
                self._idle(worker)
            recycle = self._should_recycle()
            if self.stopping or recycle:
                if claimed is not None:
                    self._give_back(worker, claimed)  # claimed with the last result: not ours
                    claimed = None
                self._leave(worker)
            if recycle:
                self._flush(worker)
                return ExitCode.RECYCLE
        self._leave(worker)
        self._flush(worker)
        return ExitCode.OK

    def _leave(self, worker: Worker) -> None:
        """Give back all this worker holds before it exits: held jobs and kept successes,
        and what a claim may have taken whose reply a stop request cut off (the server
        may have run it: the job is claimed under its token, and nobody would run it
        until its lease ran out). The slot keeps showing that token either way, and the
        supervisor looks again once this worker has exited: the server may run a claim
        still waiting on the closed connection after this worker's own look."""
        token = worker.unanswered
        try:
            worker.give_back_unanswered()
        except (BrokerUnavailable, BrokerError) as exc:
            log.warning("what an interrupted claim took was not given back (%s); the "
                        "supervisor gives it back", exc)
        self._settle_held(worker)
        if token is not None:
            self.slots.claiming(self.slot, token)

    def _next_job(self, worker: Worker) -> Claimed | None:
        """A held job, else one claimed now (with the kept successes, if any), else one
        waited for; None when the wait ended empty, was interrupted, or Redis is away."""
        holding = self.holding
        job = holding.next()
        if job is None and holding.done:  # kept successes go with a new claim
            held = self.stopping or self.slots.held(self.slot)
            job = self._write_kept(worker, 0 if held else self.batch_size.size)
            if job is None:
                self._idle(worker)  # the slot no longer shows the job that ended
        if job is not None:
            return job
        try:
            if self.slots.held(self.slot):
                self._hold(worker)
                return None
            job = worker.claim(wait=CLAIM_WAIT * random.uniform(1 - CLAIM_WAIT_SPREAD,
                                                                1 + CLAIM_WAIT_SPREAD))
        except (BrokerUnavailable, BrokerError) as exc:
            self._redis_down(exc, claimed=False)
            return None
        except (StopWaiting, Poked):  # asked to stop (the flag is set), or paused/resumed
            return None
        self.outage = 0
        return job

    def _hold(self, worker: Worker) -> None:
        """The pool is paused: give back what an interrupted wait may have claimed, then
        claim nothing until the pool is resumed or the worker told to stop."""
        worker.give_back_unanswered()
        self._publish(ChildState.PAUSED)
        self._title(f"worker paused [{','.join(worker.queues)}] done={self.jobs_done}")
        while self.slots.held(self.slot) and not self.stopping:
            self._nap()
        if not self.stopping:
            self._idle(worker)

    def _nap(self) -> None:
        try:
            self.napping = True
            time.sleep(HOLD_NAP)
        except Poked:
            pass
        finally:
            self.napping = False

    def _on_poke(self, signum: int, frame: object) -> None:
        """Interrupt a wait (each handler clears its flag: one interruption per wait)."""
        if self.napping:
            self.napping = False
            raise Poked
        if self.worker is not None and self.worker.waiting:
            self.worker.waiting = False
            raise Poked

    def _hook_deadline(self, seconds: float) -> None:
        """A job's on_failure hook runs after the job returned, under a deadline of its own."""
        if seconds:
            self.slots.deadline(self.slot, time.monotonic() + seconds)
        else:
            self.slots.returned(self.slot)

    def _connect(self) -> jobs.Broker:
        """The worker's broker, on its bounded connections, and the process default one
        job code's calls (fn.enqueue(), ...) go through, on connections of their own: the
        worker's stay within their bound whatever a job does."""
        c = self.config
        broker = jobs.Broker(self.url, redis_settings=c.redis, defaults=c.defaults,
                             encryption=c.encryption, client=worker_client(self.url, c.redis))
        job_code = jobs.connect(self.url, redis_settings=c.redis, defaults=c.defaults,
                                encryption=c.encryption, client=job_client(self.url, c.redis))
        for b in (broker, job_code):
            b.sealer.keyring  # noqa: B018  (read now: a job may change the cwd or environ)
        return broker

    def _give_back(self, worker: Worker, job: Claimed) -> None:
        try:
            worker.release(job)
        except (BrokerUnavailable, BrokerError) as exc:
            log.warning("job %s could not be released (%s); its lease will expire", job.id, exc)

    def _after_fork(self, parent: int) -> None:
        self.pid = os.getpid()
        for sig in (signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        # Signals meant for the supervisor may reach the whole group or cgroup
        # (Ctrl-C, `systemctl kill`): the supervisor decides, workers carry on.
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGALRM, self._on_soft_timeout)
        signal.signal(POKE, self._on_poke)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        self.handlers = [_raw_handler(sig) for sig in GUARDED_SIGNALS]
        os.setpgid(0, 0)
        random.seed()
        _die_with_parent(parent)
        limit = self.spec.job_memory_limit
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit * 1024 * 1024, limit * 1024 * 1024))
        self._publish(ChildState.BOOTING)

    def _on_term(self, signum: int, frame: object) -> None:
        self.stopping = True
        if self.worker is not None:
            self.worker.stopping = True
        if self.napping:
            self.napping = False
            raise StopWaiting  # paused: leave now instead of after the nap
        if self.worker is not None and self.worker.waiting:
            raise StopWaiting  # idle in BLPOP: leave now instead of after the wait

    def _on_soft_timeout(self, signum: int, frame: object) -> None:
        raise JobTimeout("soft timeout reached")

    def _heartbeat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_EVERY)
            self.slots.beat(self.slot)
            self._show_busy()

    def _run_job(self, worker: Worker, job: Claimed) -> tuple[Outcome, Policy]:
        """Run one job under its hard deadline (and soft timeout), showing it in the slot."""
        if worker.tally.due():
            self._flush(worker)  # before the job: it may be killed and take the counts along
        resolved = resolve_job(job, worker.broker)
        policy = resolved[1]
        now = time.monotonic()
        soft = policy.soft_timeout or 0.0
        if soft >= policy.timeout:
            soft = 0.0  # the hard kill comes first; a soft timeout after it means nothing
        name = job.spec.function if job.spec else "?"
        self._publish(ChildState.BUSY, job_id=job.id, queue=job.queue, token=job.token,
                      function=name, attempt=job.attempt, started=now,
                      deadline=now + policy.timeout, soft_deadline=now + soft if soft else 0.0)
        self.busy_title = (name, job.id)
        if now - self.title_at >= TITLE_EVERY:
            self._show_busy()
        # Claim-ahead is for jobs of 8 ms and more: while batches run (short jobs) the
        # per-job history and the arm check are skipped.
        ahead = self.ahead and self.batch_size.size == 1
        if ahead:
            self._look_ahead(job, name, now)
        if soft:
            signal.setitimer(signal.ITIMER_REAL, soft)
        try:
            outcome, policy = worker.execute(job, resolved)
        finally:
            self.running_id = None
            signal.setitimer(signal.ITIMER_REAL, 0)  # also a timer the job set and left
            self._contain(job)
        if ahead:
            self.durations.observe(name, outcome.duration)
        self.slots.returned(self.slot)
        self.jobs_done += 1
        if outcome.error is not None:
            self.jobs_failed += 1
        return outcome, policy

    def _look_ahead(self, job: Claimed, name: str, now: float) -> None:
        """Claim-ahead: have the holder thread claim the next job ``LEAD`` before this
        one's expected end, and write the success kept for it while this one runs."""
        self.running_id = job.id
        holding = self.holding
        expected = self.durations.expected(name)
        if expected is not None and not holding.waiting:
            holding.arm(job.id, now + expected - LEAD)
        if holding.done and not holding.waiting:
            holding.flush_soon()  # kept for the job claimed ahead, which runs now

    def _contain(self, job: Claimed) -> None:
        """Undo what a job may do to its worker: fork, replace signal handlers, leave
        children behind."""
        if os.getpid() != self.pid:
            # A process the job forked has returned from the function: it must not go on
            # as a second worker running the same job. Only the worker writes outcomes.
            os._exit(0)
        if list(map(_raw_handler, GUARDED_SIGNALS)) != self.handlers:  # one look, in C
            for sig, handler in zip(GUARDED_SIGNALS, self.handlers, strict=True):
                if _raw_handler(sig) is not handler:
                    signal.signal(sig, handler)
                    log.warning("job %s changed the worker's %s handler: restored", job.id,
                                signal.Signals(sig).name)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:  # reap what the job started and left
                pass

    def _should_recycle(self) -> bool:
        s = self.spec
        if s.max_jobs_per_child and self.jobs_done >= s.max_jobs_per_child:
            log.info("worker %d recycles after %d jobs", os.getpid(), self.jobs_done)
            return True
        if s.max_memory_per_child:
            rss = psutil.Process().memory_info().rss
            if rss > s.max_memory_per_child * 1024 * 1024:
                log.info("worker %d recycles: RSS %d MiB above max_memory_per_child",
                         os.getpid(), rss // 2**20)
                return True
        return False

def child_main(child: Child, parent: int) -> None:
    """Entry point right after fork: run, flush, and leave without unwinding the parent."""
    code = int(ExitCode.ERROR)
    try:
        code = child.run(parent)
    except BaseException:
        log.exception("worker %d crashed", os.getpid())
    finally:
        try:
            tracing.flush()  # os._exit runs no exit handler: spans still buffered go now
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
