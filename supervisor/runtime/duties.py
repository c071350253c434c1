"""Redis duties of the supervisor, on threads so a slow or absent Redis never delays
the main loop's deadline enforcement.

One pipelined lease renewal per tick for every job the children run, the cancel
requests for those jobs, reclaim of expired leases, outcomes of killed children (kept
and retried until written), the supervisor's registry entry, and the backlog figure
autoscaling reads. Control messages (``jobvisor scale``, ``reload --host``) have a thread
of their own blocked on their list, so one arrives within milliseconds, not at a tick.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

from jobs import Broker, BrokerError, reclaim, run_promoter
from jobs.cluster import Control, forget_stale_ids, publish_entry, take_control, withdraw_entry
from jobs.effective import FunctionOptions, publish_functions
from jobs.limits import publish as publish_limits
from jobs.records import AttemptError
from jobs.tally import Tally, by_field, decode_pending
from jobs.worker import account_failure

log = logging.getLogger(__name__)

TRIM_EVERY = 10.0  # seconds between sweeps of the finished-jobs indexes
CONTROL_WAIT = 1.0  # the control thread's blocking wait: also how soon it notices a stop
PRUNE_IDS_EVERY = 60.0  # seconds between sweeps of the ids of supervisors long gone


class Claim(msgspec.Struct, frozen=True):
    """A job a child runs under its claim token: what renewing its lease or settling it
    takes."""

    job_id: str
    queue: str
    token: str


class Settlement(msgspec.Struct, frozen=True):
    """What to do with the job of a child that is gone: release it, or account a failure."""

    claim: Claim
    error: AttemptError | None  # None: release without spending an attempt


# Refusals that pass: a full, busy, loading or read-only (failing over) server, or an ACL
# an operator is fixing. Anything else is refused the same way every time.
RETRYABLE = frozenset({"OOM", "BUSY", "LOADING", "TRYAGAIN", "READONLY", "MASTERDOWN",
                       "NOREPLICAS", "NOPERM", "CLUSTERDOWN"})


class InFlight(msgspec.Struct, frozen=True):
    """A claim a child sent just before it died: the job it took, if any, goes back."""

    token: str


class Unwritten(msgspec.Struct, frozen=True):
    """A success a child kept to write with its next call, and died before it could."""

    claim: Claim
    result: bytes
    result_ttl: float
    duration: float
    function: str  # its success is counted under it, as the child would have


class Uncounted(msgspec.Struct, frozen=True):
    """Outcome counts a child had not written when it died (jobs.tally's encoding)."""

    blob: bytes


class Event(msgspec.Struct, frozen=True):
    """A worker lifecycle event for the events stream."""

    fields: dict[str, str | int | float]


class Duties:
    def __init__(self, broker: Broker, lease: float, queues: list[str],
                 claims: Callable[[], list[Claim]], state: Callable[[], dict[str, Any]],
                 on_control: Callable[[Control], None],
                 on_cancel: Callable[[str, str], None] = lambda job_id, reason: None) -> None:
        self.broker = broker
        self.lease = lease
        self.queues = queues  # every pool's: promotion, aging, claims of dead children
        self.backlog_queues = queues  # the default pool's: what autoscaling reads
        self.claims = claims
        self.state = state
        self.on_control = on_control
        self.on_cancel = on_cancel
        self.reclaims = 0
        self.tick = min(1.0, lease / 3)
        self.backlog = 0
        self.stop = threading.Event()
        self._wake = threading.Event()
        self._flushing = threading.Lock()  # the loop and shutdown may both flush
        self._outbox: deque[Settlement | InFlight | Unwritten | Uncounted | Event] = deque()
        self._limits: dict[str, str | None] | None = None
        self._functions: dict[str, FunctionOptions] | None = None
        self.aging: tuple[float, int] = (0.0, 10)  # (seconds, priority step); 0 s: off
        self._threads: list[threading.Thread] = []
        self.ident = f"{socket.gethostname()}:{os.getpid()}"
        self._ids_pruned = 0.0

    def set_limits(self, definitions: dict[str, str | None]) -> None:
        """Publish the loaded functions' rate and concurrency limits on the next tick."""
        self._limits = definitions
        self._wake.set()

    def _publish_limits(self, definitions: dict[str, str | None]) -> None:
        for name in publish_limits(self.broker, definitions):
            log.warning("limit %r is named by @job(limits=...) but not defined: add "
                        "[limits.%s] to config.toml or call jobs.limits.set_limit(%r, ...); "
                        "until then its jobs are refused at enqueue", name, name, name)

    def set_functions(self, functions: dict[str, FunctionOptions]) -> None:
        """Publish the loaded functions' effective options on the next tick."""
        self._functions = functions
        self._wake.set()

    def settle(self, item: Settlement | InFlight | Unwritten | Uncounted | Event) -> None:
        self._outbox.append(item)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._outbox)

    def start(self) -> None:
        for target, name in ((self._loop, "duties"), (self._promote, "promoter"),
                             (self._controls, "control")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flush outstanding settlements, remove the registry entry, stop the threads."""
        self.stop.set()
        self._wake.set()
        # Wake the promoter; if Redis is gone it wakes on its own within a second.
        with contextlib.suppress(Exception):
            self.broker.client.rpush(self.broker.keys.timers(), 1)
        for t in self._threads:
            # The promoter may sit in a BLPOP another supervisor's wake-up token went to,
            # the control thread in its own BLPOP: daemons with nothing to flush, so they
            # are not waited for long.
            t.join(timeout if t.name == "duties" else 0.2)
        deadline = time.monotonic() + timeout
        # Everything gets one try: a claim a killed worker had in flight may have taken a
        # job it never showed, given back here if Redis answers (else its lease runs out).
        # Outcomes of jobs workers had claimed are worth waiting for; lifecycle events are not.
        flushed = self._flush()
        while not flushed and self._outcomes_pending() and time.monotonic() < deadline:
            time.sleep(0.1)
            flushed = self._flush()
        for item in self._outbox:
            if isinstance(item, (Settlement, InFlight)):
                log.error("could not write before stopping, left to lease expiry: %s", item)
        try:
            withdraw_entry(self.broker, self.ident)
        except Exception:
            log.warning("could not remove this supervisor's registry entry")

    def _outcomes_pending(self) -> bool:
        return any(isinstance(item, Settlement) for item in self._outbox)

    def _promote(self) -> None:
        while not self.stop.is_set():
            try:
                run_promoter(self.broker, self.stop, lambda: self.queues)
            except Exception as exc:
                log.warning("promoter: %s", exc)
                self.stop.wait(1.0)

    def _controls(self) -> None:
        while not self.stop.is_set():
            try:
                for message in take_control(self.ident, self.broker, wait=CONTROL_WAIT):
                    self.on_control(message)
            except Exception as exc:  # Redis away: the duties loop reports it too
                log.warning("control messages: %s", exc)
                self.stop.wait(1.0)

    def _loop(self) -> None:
        last_reclaim = last_trim = last_aging = 0.0
        # A dead host's jobs come back within lease + this cadence.
        reclaim_every = min(1.0, self.lease / 3)
        last_renewal = time.monotonic()
        reclaim_not_before = 0.0
        while not self.stop.is_set():
            self._wake.wait(self.tick)
            self._wake.clear()
            try:
                self._flush()
                if self._limits is not None:
                    self._publish_limits(self._limits)
                    self._limits = None
                if self._functions is not None:
                    publish_functions(self.broker, self._functions)
                    self._functions = None
                self._renew()
                now = time.monotonic()
                if now - last_renewal > self.lease / 2:
                    reclaim_not_before = self._outage(now - last_renewal)
                last_renewal = now
                after, step = self.aging
                if after > 0 and now - last_aging >= min(1.0, after / 2):
                    last_aging = now
                    self.broker.maintenance.age(self.queues, after, step)
                if now - last_reclaim >= reclaim_every and now >= reclaim_not_before:
                    last_reclaim = now
                    queues = self.broker.jobs.known_queues()
                    waited = time.monotonic() - now
                    if waited > self.lease / 2:
                        # With nothing claimed, no renewal spoke to Redis first: this reply is
                        # the one that waited out the outage.
                        reclaim_not_before = self._outage(waited)
                    else:
                        trim = now - last_trim >= TRIM_EVERY
                        last_trim = now if trim else last_trim
                        self._sweep(queues, trim)
                self._publish()
            except Exception as exc:  # keep the thread alive through any Redis trouble
                log.warning("redis duties: %s", exc)

    def _outage(self, gap: float) -> float:
        """Redis was out of reach (stalled, restarting, cut off) for a good part of a
        lease: every host's leases may have run out meanwhile, though their workers are
        alive. Give the other supervisors a whole lease to renew before taking anything
        back, so live jobs are not run twice. Returns when reclaiming may resume."""
        wait = max(self.lease, 1.0)
        log.info("redis back after %.1f s: reclaiming expired leases from %.1f s on", gap, wait)
        return time.monotonic() + wait

    def _sweep(self, queues: list[str], trim: bool) -> None:
        """Trim the finished-jobs indexes (every TRIM_EVERY s); reclaim expired leases."""
        if trim:
            for q in queues:
                self.broker.maintenance.trim(q)
        for job_id, state in reclaim(self.broker, queues):
            self.reclaims += 1
            log.warning("job %s reclaimed after its lease expired: now %s", job_id, state)

    def _renew(self) -> None:
        """Renew the leases of the jobs the children run; pass on cancel requests."""
        claims = self.claims()
        lost = self.broker.renew([(c.job_id, c.queue, c.token) for c in claims], self.lease)
        for i in lost:
            # A job its worker just finished is not lost (its slot lags a moment behind).
            state = self.broker.jobs.state_of(claims[i].job_id)
            if state not in ("completed", "dead", "canceled"):
                log.warning("job %s was taken from its worker (its lease expired and it "
                            "was reclaimed: now %s)", claims[i].job_id, state)
        # Cancel requests for running jobs: checked every tick, only while busy.
        for job_id, reason in self.broker.jobs.cancel_requests([c.job_id for c in claims]).items():
            self.on_cancel(job_id, reason)

    def _flush(self) -> bool:
        with self._flushing:
            return self._flush_locked()

    def _flush_locked(self) -> bool:
        while self._outbox:
            item = self._outbox[0]
            try:
                if isinstance(item, Event):
                    self.broker.jobs.event(**item.fields)
                    self._outbox.popleft()
                    continue
                if isinstance(item, Uncounted):
                    self.broker.maintenance.add_counts(by_field(decode_pending(item.blob)))
                    self._outbox.popleft()
                    continue
                if isinstance(item, InFlight):
                    for job_id, queue, token in self.broker.claimed_by(item.token,
                                                                       self.queues):
                        self.broker.release_claim(job_id, queue, token)
                        log.info("job %s, claimed by a worker that died before running it, "
                                 "released back to %s", job_id, queue)
                    self._outbox.popleft()
                    continue
                if isinstance(item, Unwritten):
                    c = item.claim
                    state = self.broker.complete_claim(c.job_id, c.queue, c.token, item.result,
                                                       item.result_ttl, item.duration)
                    if state == "now":  # counted once, by whoever wrote it
                        counts = Tally()
                        counts.completed(c.queue, item.function, item.duration)
                        try:
                            counts.flush(self.broker)
                        except Exception:  # written, not counted yet: counted later
                            self._outbox.append(Uncounted(counts.snapshot()))
                    log.info("job %s: its worker died before writing its success; written "
                             "now (%s)", c.job_id, "completed" if state else "already settled")
                    self._outbox.popleft()
                    continue
                c = item.claim
                if item.error is None:
                    self.broker.release_claim(c.job_id, c.queue, c.token)
                    log.info("job %s released back to %s", c.job_id, c.queue)
                else:
                    state = account_failure(self.broker, c.job_id, c.queue, c.token, item.error)
                    log.warning("job %s: %s -> %s", c.job_id, item.error.message,
                                state or "already settled")
            except Exception as exc:
                if not isinstance(exc, BrokerError) or exc.code in RETRYABLE:
                    log.warning("cannot write to Redis yet, will retry: %s", exc)
                    return False
                # Refused for good (a record written over by another program, ...): one
                # such item must not hold up every outcome queued behind it.
                log.error("Redis refused %s, dropped (a job it claimed comes back when its "
                          "lease runs out): %s", item, exc)
            self._outbox.popleft()
        return True

    def _publish(self) -> None:
        pipe = self.broker.client.pipeline(transaction=False)
        for q in self.backlog_queues:
            pipe.zcard(self.broker.keys.queued(q))
        publish_entry(pipe, self.broker, self.ident, msgspec.json.encode(self.state()),
                      int(max(self.tick * 5, 5) * 1000))
        *counts, _, _ = pipe.execute()
        self.backlog = sum(int(c) for c in counts)
        now = time.monotonic()
        if now - self._ids_pruned >= PRUNE_IDS_EVERY:
            self._ids_pruned = now
            forget_stale_ids(self.broker)
