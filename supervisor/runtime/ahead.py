"""Claim-ahead: when a function's run times are stable, the worker claims its next job
shortly before the current one is expected to end, on its holder thread, so the round
trip and the server's wake-up overlap the job instead of following it. The job that
ended is written by the same thread while the next one runs (the child's _flush_kept).

The job claimed ahead is held like a batch's (supervisor.runtime.holding): it is in the
worker's slot, it starts within ``LEAD`` + the hold bound of its claim or goes back, and
a worker that dies gives it back without an attempt spent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from jobs import BrokerError, BrokerUnavailable, Worker
from supervisor.runtime.holding import Holding

log = logging.getLogger(__name__)

# A job running Python code gives the GIL up to another thread only every switch
# interval (5 ms by default), at each step of the holder thread's call: a worker that
# claims ahead runs with this one.
SWITCH_INTERVAL = 0.001
# Seconds before the expected end of a job that the next one is claimed: the round trip
# and the server's wake-up (2 ms), and two waits of the holder thread for the GIL.
LEAD = 0.002 + 2 * SWITCH_INTERVAL
STABLE_RUNS = 5  # runs of a function before its run time counts as known
SPREAD = 0.1  # the most its mean deviation may be, as a share of its mean run time
WEIGHT = 0.2  # of the newest run time in the moving averages
MOST_FUNCTIONS = 1024  # functions followed; past it, the history starts again
RETRY_PAUSE = 0.5  # between attempts to give back what a failed claim may have taken


class Durations:
    """Each function's run time: moving mean and mean deviation, and how many runs."""

    __slots__ = ("_seen", "shortest")

    def __init__(self, shortest: float) -> None:
        self.shortest = shortest  # shorter jobs are not claimed ahead of (batches serve them)
        self._seen: dict[str, list[float]] = {}

    def observe(self, function: str, seconds: float) -> None:
        seen = self._seen.get(function)
        if seen is None:
            if len(self._seen) >= MOST_FUNCTIONS:
                self._seen.clear()
            self._seen[function] = [seconds, 0.0, 1.0]
            return
        mean, spread, runs = seen
        seen[1] = spread + WEIGHT * (abs(seconds - mean) - spread)
        seen[0] = mean + WEIGHT * (seconds - mean)
        seen[2] = runs + 1

    def expected(self, function: str) -> float | None:
        """The run time to expect, when the history is long and steady enough."""
        seen = self._seen.get(function)
        if seen is None:
            return None
        mean, spread, runs = seen
        if runs < STABLE_RUNS or mean < self.shortest or spread > SPREAD * mean:
            return None
        return mean


class Ahead:
    """The holder thread's side of claim-ahead. ``claim_lock`` is held around every call
    that writes outcomes or claims, by either thread: one call in flight at a time, so
    the slot's in-flight token always names the one that is."""

    def __init__(self, worker: Worker, holding: Holding, claim_lock: AbstractContextManager[Any],
                 running: Callable[[], str | None], may_claim: Callable[[], bool]) -> None:
        self.worker = worker
        self.holding = holding
        self.claim_lock = claim_lock
        self.running = running  # the id of the job the main thread runs now, if any
        self.may_claim = may_claim  # False while stopping or paused
        holding.on_ahead = self.claim

    def claim(self, job_id: str) -> None:
        """Claim the next job if ``job_id`` still runs and nothing is held yet."""
        with self.claim_lock:
            if self.running() != job_id or self.holding.waiting or not self.may_claim():
                return
            token = self.worker.fresh_token()
            try:
                claimed = self.worker.finish_batch([], 1, token=token)
            except (BrokerUnavailable, BrokerError) as exc:
                log.warning("claim ahead of job %s failed (%s); what it took goes back",
                            job_id, exc)
                self._give_back(token)
                return
            if claimed:
                self.holding.hold(claimed, wait=LEAD)

    def _give_back(self, token: str) -> None:
        """What a claim whose reply never came took goes back (the slot shows its token
        until then, so a worker that dies meanwhile has it given back too)."""
        while self.may_claim():
            try:
                for job_id, queue, held_with in self.worker.broker.claimed_by(
                        token, self.worker.queues):
                    self.worker.broker.release_claim(job_id, queue, held_with)
                return
            except (BrokerUnavailable, BrokerError):
                time.sleep(RETRY_PAUSE)
