"""What a worker child keeps and shows, and how it writes outcomes.

Its state as the supervisor sees it (the shared-memory slot, the process title), and
every write of an outcome: one job's with the next claim, successes kept to go with a
later call (batches, claim-ahead), and the slow paths while Redis does not answer.
``supervisor.runtime.child.Child`` runs the claim-run-finish loop around it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from jobs import BrokerError, BrokerUnavailable, StaleToken, Worker
from jobs.policy import Outcome, Policy, Verdict
from jobs.records import Claimed
from jobs.store.completions import Completion
from supervisor.config import Config, PoolSpec
from supervisor.runtime.ahead import LEAD, Durations
from supervisor.runtime.batch_size import BatchSize
from supervisor.runtime.holding import Holding
from supervisor.runtime.proctitle import set_title
from supervisor.runtime.slots import UNCOUNTED_MAX, ChildState, Slots

log = logging.getLogger(__name__)


class ChildBase:
    """The state of one child and its outcome writing (see the module docstring)."""

    def __init__(self, config: Config, spec: PoolSpec, slots: Slots, slot: int,
                 url: str) -> None:
        self.config = config
        self.spec = spec
        self.slots = slots
        self.slot = slot
        self.url = url
        self.stopping = False
        self.worker: Worker | None = None
        self.jobs_done = 0
        self.jobs_failed = 0
        # Seconds spent on jobs before the one shown now, and when that one started
        # (0: none): the supervisor's busy-seconds counter adds them up.
        self.busy_time = 0.0
        self.busy_since = 0.0
        self.outage = 0
        self.napping = False  # in a paused worker's nap: a poke or stop may interrupt it
        self.pid = 0  # set in the child after the fork
        self.handlers: list[Any] = []  # the worker's own, put back after any job changes one
        # The job the process title is to name. A title is a string copy into argv, too
        # dear for every short job: it is written at most every TITLE_EVERY seconds, and a
        # job started meanwhile is named by the heartbeat thread if it still runs then.
        self.busy_title: tuple[str, str] | None = None
        self.shown_title: tuple[str, str] | None = None
        self.title_at = float("-inf")
        self.title_lock = threading.Lock()  # a title set now is never undone by a stale one
        short = spec.claim_batch_under_ms / 1000
        self.batch_size = BatchSize(spec.claim_batch, short)
        # A held job starts within five times what counts as short, or goes back.
        self.holding = Holding(self._release_held, self._mirror_held, bound=5 * short)
        # Jobs long enough to claim ahead of: their end is more than a lead away.
        self.durations = Durations(shortest=max(short, 2 * LEAD))
        self.ahead = False  # claim-ahead on (spec.claim_ahead, once the worker is up)
        # Held by whichever thread writes outcomes or claims: one call in flight at a time.
        self.claim_lock = threading.RLock()
        self.running_id: str | None = None  # the job running now, while it runs

    def _release_held(self, jobs: list[Claimed]) -> None:
        """Give back held jobs that will not start here (on the caller's thread)."""
        if self.worker is not None:
            self.worker.broker.release_many([(j.id, j.queue, j.token) for j in jobs])

    def _mirror_held(self, blob: bytes) -> None:
        self.slots.holding(self.slot, blob)

    def _settle_held(self, worker: Worker) -> None:
        """Leaving or pausing: held jobs go back, kept successes are written, and the
        slot no longer shows a job that ended."""
        self.holding.give_back_all()
        if self.holding.done:
            self._write_kept(worker, 0)
        self._idle(worker)

    def _flush_kept(self) -> None:
        """On the holder thread: write the kept successes while the main thread runs the
        next job (the one claimed ahead, or a held job that runs long)."""
        worker = self.worker
        if worker is None:
            return
        with self.claim_lock:
            done = list(self.holding.done)
            if not done:
                return
            try:
                worker.finish_batch(done, 0, token=worker.fresh_token())
            except (BrokerUnavailable, BrokerError) as exc:
                log.warning("%d outcomes not written yet (%s); the worker writes them with "
                            "its next call", len(done), exc)
                return
            self.holding.written(len(done))

    def _idle(self, worker: Worker) -> None:
        self._publish(ChildState.IDLE, idle_since=time.monotonic())
        self._title(f"worker idle [{','.join(worker.queues)}] done={self.jobs_done}")

    def _title(self, text: str) -> None:
        """Show ``text`` now; the heartbeat thread shows a busy title again when a job
        starts after it."""
        with self.title_lock:
            self.busy_title = self.shown_title = None
            self.title_at = float("-inf")  # the next job is named at once
            set_title(text)

    def _show_busy(self) -> None:
        with self.title_lock:
            busy = self.busy_title
            if busy is not None and busy is not self.shown_title:
                self.shown_title = busy
                self.title_at = time.monotonic()
                set_title(f"worker busy {busy[0]} {busy[1]}")

    def _flush(self, worker: Worker) -> None:
        try:
            worker.flush_counts()
        except Exception as exc:
            log.warning("outcome counters not written: %s", exc)

    def _publish(self, state: ChildState, **fields: Any) -> None:
        uncounted = b""
        if self.worker is not None:
            uncounted = self.worker.tally.snapshot()
            if len(uncounted) > UNCOUNTED_MAX:
                self._flush(self.worker)  # too many kinds of counts to mirror: write them now
                uncounted = self.worker.tally.snapshot()
                if len(uncounted) > UNCOUNTED_MAX:
                    uncounted = b""  # the flush failed: they stay in the tally alone
        # The job shown until now ends where this write starts the next one, or now.
        if self.busy_since:
            end = fields.get("started") or fields.get("idle_since") or time.monotonic()
            self.busy_time += end - self.busy_since
        self.busy_since = fields.get("started", 0.0)
        with self.holding.lock:  # what is held, as of this write
            if state is ChildState.BUSY:
                self.holding.started()  # shown running from this write on, not held
            self.slots.write(self.slot, state, self.pid, self.jobs_done, uncounted=uncounted,
                             jobs_failed=self.jobs_failed, busy_time=self.busy_time,
                             held=self.holding.blob(), **fields)

    def _mirror_counts(self, blob: bytes) -> None:
        """The tally handed counts over or took them back: the slot shows what is left."""
        self.slots.uncounted(self.slot, blob if len(blob) <= UNCOUNTED_MAX else b"")

    def _finish(self, worker: Worker, job: Claimed, outcome: Outcome,
                policy: Policy) -> Claimed | None:
        self.holding.disarm()
        with self.claim_lock:  # after a claim ahead in flight, if one is
            return self._finish_locked(worker, job, outcome, policy)

    def _finish_locked(self, worker: Worker, job: Claimed, outcome: Outcome,
                       policy: Policy) -> Claimed | None:
        """Write the outcome and claim the next job in one round trip; when Redis does not
        answer, keep the outcome until it is written, then recover what the call claimed.

        While jobs are short, a success is kept for the next call when held jobs are to
        run first, and the call claims a batch (None is returned: the next job is held).
        """
        want = self.batch_size.observe(outcome.duration)
        holding = self.holding
        if outcome.verdict is Verdict.COMPLETED and (want > 1 or holding.busy):
            kept = Completion(job, outcome.result, policy.result_ttl, outcome.duration)
            if not self.stopping and holding.keep(kept):
                return None
            stop = holding.waiting or self.stopping or self.slots.held(self.slot)
            return self._write_kept(worker, 0 if stop else want, kept)
        if holding.done:  # earlier successes first, then this outcome
            self._write_kept(worker, 0)
        if holding.waiting:
            self._write_outcome(worker, job, outcome, policy)
            return None
        if not self.stopping:
            try:
                _, following = worker.finish_and_claim(job, outcome, policy)
                self.outage = 0
                return following
            except (BrokerUnavailable, BrokerError) as exc:
                # Unknown whether it applied: fall back to finish.
                name = job.spec.function if job.spec else "?"
                self._title(f"worker finishing {name} {job.id}: its outcome waits for Redis")
                log.warning("job %s returned; its outcome is kept until Redis takes it",
                            job.id)
                self._redis_down(exc)
        self._write_outcome(worker, job, outcome, policy)
        return self._recover_claim(worker)

    def _write_kept(self, worker: Worker, want: int,
                    last: Completion | None = None) -> Claimed | None:
        """Write the kept successes (and ``last``) and claim up to ``want`` jobs in one
        call; the first is returned, the rest held. When Redis does not answer, each is
        written on its own until written, then what the call claimed is recovered."""
        with self.claim_lock:
            return self._write_kept_locked(worker, want, last)

    def _write_kept_locked(self, worker: Worker, want: int,
                           last: Completion | None) -> Claimed | None:
        done = [*self.holding.done, *([last] if last else [])]
        if not done and not want:
            return None  # written meanwhile by the holder thread
        try:
            claimed = worker.finish_batch(done, want)
            self.outage = 0
        except (BrokerUnavailable, BrokerError) as exc:
            log.warning("worker %d: %d outcomes are kept until Redis takes them", self.pid,
                        len(done))
            self._redis_down(exc)
            for c in done:
                self._write_completion(worker, c)
            claimed = self._recover_batch(worker, want)
        self.holding.written(len(done) - (1 if last else 0))
        if len(claimed) > 1:
            self.holding.hold(claimed[1:])
        return claimed[0] if claimed else None

    def _write_completion(self, worker: Worker, c: Completion) -> None:
        """One kept success, retried until written (or found taken back)."""
        while True:
            try:
                worker.complete(c)
                self.outage = 0
                return
            except (BrokerUnavailable, BrokerError) as exc:
                self._redis_down(exc)

    def _recover_batch(self, worker: Worker, want: int) -> list[Claimed]:
        """The batch call may have claimed jobs before its reply was lost: ask again."""
        while True:
            try:
                return worker.finish_batch([], want, resent=True)
            except (BrokerUnavailable, BrokerError) as exc:
                self._redis_down(exc)

    def _write_outcome(self, worker: Worker, job: Claimed, outcome: Outcome,
                       policy: Policy) -> None:
        """Retry until written (the supervisor renews the lease meanwhile), or until the
        token is found stale: then the job is no longer this worker's."""
        while True:
            try:
                worker.finish(job, outcome, policy)
                self.outage = 0
                return
            except StaleToken as exc:
                log.warning("%s", exc)
                return
            except (BrokerUnavailable, BrokerError) as exc:
                self._redis_down(exc)

    def _recover_claim(self, worker: Worker) -> Claimed | None:
        """The combined call may have claimed a job before its reply was lost: ask again."""
        while True:
            try:
                return worker.recover_claim()
            except (BrokerUnavailable, BrokerError) as exc:
                self._redis_down(exc)

    def _redis_down(self, exc: BrokerUnavailable | BrokerError, claimed: bool = True) -> None:
        """Back off (up to 5 s) while Redis is unreachable, logging once per outage.

        A worker with no job claimed (``claimed=False``) cuts the pause short when asked to
        stop; one keeping an outcome to write sleeps it out and tries again.
        """
        if self.outage == 0:
            log.warning("worker %d: %s; retrying", os.getpid(), exc)
        self.outage += 1
        until = time.monotonic() + min(0.1 * 2 ** min(self.outage, 6), 5.0)
        while (left := until - time.monotonic()) > 0 and (claimed or not self.stopping):
            time.sleep(min(left, 0.05))
