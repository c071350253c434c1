"""Firing cron schedules: one enqueue per tick, however many supervisors run them.

Every supervisor runs a ``Firer``; for each schedule, a pass does this:

1. From its clock (the Redis server's ``TIME`` by default: hosts may be skewed) it
   finds the latest tick at or before now. If that tick is newer than the schedule's
   recorded state and the misfire policy lets it run (``decide``), it is due.
2. ``cron_claim.lua`` moves the state to the tick only if the tick is newer than the
   state's. The state never moves back, so one firer wins each tick and every other
   gets "nothing to do"; a supervisor that comes late, even after the tick's job has
   finished and its record expired, cannot fire that tick again.
3. The winner enqueues the job under the id ``cron.<name>.<tick>`` through the normal
   enqueue path, then marks the claim sent (``cron_sent.lua``).

A firer that stops between 2 and 3 leaves a claim that is not marked sent. After
``CLAIM_LEASE`` seconds any firer takes it over: if the tick's job exists, the claim is
only marked sent; if not, the job is sent. (A firer asking again for a claim it already has,
say after a lost reply, gets it back at once.) Enqueueing is idempotent on the job id,
so a take-over never makes a second job as long as a finished job's record outlives
the lease (``result_ttl`` above 10 s; the default is a day) and no firer is frozen for
longer than the lease between its claim and its enqueue.

The state of a schedule is a hash ``<ns>:schedule:<name>``: ``tick`` (latest tick
claimed, or the baseline set when the schedule was first seen: ticks at or before it
are never fired), ``job``, ``at`` (claim time, server ms), ``sent``, ``by`` (firer) and
``resumed`` (server seconds of the latest resume). It expires after ``STATE_TTL``
without a fire; the schedule then starts afresh.

Pausing (``jobs.schedule_control``) puts the name in ``<ns>:schedules:paused``, for config
and API schedules alike: firers skip it and the claim script refuses its ticks. Resuming
records the moment in ``resumed``; ticks at or before it are never fired, so a schedule
paused for a week does not run a missed tick when resumed, whatever its misfire policy
(that policy is for ticks nobody could fire, not for ticks an operator held back).
"""

from __future__ import annotations

import math
import os
import random
import secrets
import socket
from collections.abc import Callable, Sequence

import msgspec

from jobs.enqueue import enqueue_call
from jobs.errors import BrokerError, BrokerUnavailable, JobsError
from jobs.schedules import (
    Schedule,
    ScheduleKeys,
    decode,
    latest_tick,
    next_tick,
    tick_call,
    tick_job_id,
    union,
)
from jobs.store.broker import Broker
from jobs.store.connection import translated
from jobs.store.layouts import CRON_CLAIM, CRON_SENT

Clock = Callable[[], float]

CLAIM_LEASE = 10.0  # seconds a claim may stay unsent before another firer takes it over
ON_TIME = 5.0  # a tick fired at most this late is on time, whatever the misfire policy
STATE_TTL = 400 * 86400.0  # state kept this long after a fire: a yearly schedule keeps it


class State(msgspec.Struct, frozen=True, kw_only=True):
    """One schedule's firing state as stored in Redis."""

    tick: int | None = None  # latest tick claimed, or the baseline; None: never seen
    job_id: str = ""  # job of the latest claimed tick ("" when none fired yet)
    claimed_at: float = 0.0  # server time of that claim
    sent: bool = True  # False while the claimed tick's job may not be enqueued yet
    fired_by: str = ""  # the firer that claimed it (host:pid:random)
    paused_at: float | None = None  # server time of the pause; None: not paused
    resumed: int = 0  # latest resume (server seconds): ticks up to it never fire


class Fired(msgspec.Struct, frozen=True):
    schedule: str
    tick: int
    job_id: str
    late: float  # seconds between the tick and the moment it was fired


class Skipped(msgspec.Struct, frozen=True):
    schedule: str
    tick: int
    late: float


class Failed(msgspec.Struct, frozen=True):
    schedule: str
    tick: int
    error: str


class Pass(msgspec.Struct, frozen=True):
    """What one pass did, and how long until the next tick of any schedule."""

    fired: list[Fired]
    skipped: list[Skipped]
    failed: list[Failed]
    wait: float | None  # seconds until the soonest next tick; None: nothing scheduled


def server_clock(broker: Broker) -> Clock:
    """Now on the Redis server (``TIME``), in epoch seconds."""
    def now() -> float:
        with translated(broker.url):
            seconds, micros = broker.client.time()
        return int(seconds) + int(micros) / 1e6

    return now


def decide(schedule: Schedule, tick: int, now: float) -> bool:
    """Whether a due tick runs: on time always; late only with ``run_once`` within grace."""
    late = now - tick
    if late <= ON_TIME:
        return True
    return schedule.misfire == "run_once" and late <= schedule.misfire_grace


def read_states(broker: Broker, names: Sequence[str]) -> dict[str, State]:
    """The states of these schedules and whether each is paused, in one round trip."""
    if not names:
        return {}
    keys = ScheduleKeys(broker)
    with translated(broker.url):
        pipe = broker.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(keys.state(name))
        pipe.hmget(keys.paused(), list(names))
        *replies, paused = pipe.execute()
    return {name: _state(raw, at)
            for name, raw, at in zip(names, replies, paused, strict=True)}


def _state(raw: dict[bytes, bytes], paused: bytes | None = None) -> State:
    paused_at = int(paused) / 1000.0 if paused else None
    resumed = int(raw.get(b"resumed", b"0"))
    if not raw.get(b"tick"):
        return State(paused_at=paused_at, resumed=resumed)
    return State(tick=int(raw[b"tick"]), job_id=raw.get(b"job", b"").decode(),
                 claimed_at=int(raw.get(b"at", b"0")) / 1000.0,
                 sent=raw.get(b"sent", b"1") != b"0", fired_by=raw.get(b"by", b"").decode(),
                 paused_at=paused_at, resumed=resumed)


class Firer:
    """Fires due ticks of a list of schedules; call ``run`` at (or after) each tick.

    ``clock`` returns epoch seconds; tests pass their own to drive ticks.
    """

    def __init__(self, broker: Broker, clock: Clock | None = None, *,
                 lease: float = CLAIM_LEASE, rng: random.Random | None = None,
                 ident: str | None = None) -> None:
        self.broker = broker
        self.ident = ident or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.clock = clock or server_clock(broker)
        self.lease = lease
        self.rng = rng or random.Random()
        self.keys = ScheduleKeys(broker)
        self._api_version: bytes | None = None
        self._api: list[Schedule] = []
        self._decided: dict[str, int] = {}  # latest tick this firer fired or skipped
        self._next: dict[str, tuple[Schedule, int, int | None]] = {}

    def schedules(self, config: Sequence[Schedule]) -> list[Schedule]:
        """The enabled schedules to fire: config ones and the API ones they do not shadow."""
        return [s for s in union(list(config), self.api_schedules()) if s.enabled]

    def api_schedules(self) -> list[Schedule]:
        """Schedules stored through the API, re-read only when their version changed."""
        with translated(self.broker.url):
            version = self.broker.client.get(self.keys.version())
            if version != self._api_version:
                raw = self.broker.client.hgetall(self.keys.definitions())
                found = (decode(v) for _, v in sorted(raw.items()))
                self._api = [s for s in found if s is not None]
                self._api_version = version
        return self._api

    def run(self, config: Sequence[Schedule]) -> Pass:
        """One pass over every schedule: fire what is due, report when the next tick is."""
        schedules = self.schedules(config)
        if not schedules:  # nothing to fire: no clock read (idle cost)
            return Pass(fired=[], skipped=[], failed=[], wait=None)
        now = self.clock()
        states = read_states(self.broker, [s.name for s in schedules])
        done = Pass(fired=[], skipped=[], failed=[], wait=None)
        soonest = math.inf
        for s in schedules:
            soonest = min(soonest, self._visit(s, states[s.name], now, done))
        names = {s.name for s in schedules}
        self._decided = {k: v for k, v in self._decided.items() if k in names}
        self._next = {k: v for k, v in self._next.items() if k in names}
        wait = None if soonest == math.inf else max(0.0, soonest - now)
        return msgspec.structs.replace(done, wait=wait)

    def _visit(self, s: Schedule, state: State, now: float, done: Pass) -> float:
        """Handle one schedule; return its next tick (inf when it has none)."""
        if state.paused_at is not None:  # neither fired nor taken over
            paused_next = self._next_after(s, int(now))  # when to look again
            return math.inf if paused_next is None else paused_next
        if state.tick is None:
            last = self._baseline(s, now)
        else:
            last = state.tick
            if not state.sent:
                self._take_over(s, state, now, done)
        last = max(last, state.resumed, self._decided.get(s.name, last))
        upcoming = self._next_after(s, last)
        if upcoming is not None and upcoming <= now:
            tick = latest_tick(s, now)
            if tick is not None and tick > last:
                if decide(s, tick, now):
                    self._fire(s, tick, now, done)
                else:
                    done.skipped.append(Skipped(s.name, tick, now - tick))
                # Only once decided: a Redis error above leaves the tick to the next pass.
                self._decided[s.name] = tick
            upcoming = self._next_after(s, max(last, int(now)))
        return math.inf if upcoming is None else upcoming

    def _next_after(self, s: Schedule, after: int) -> int | None:
        """``next_tick`` cached per schedule: croniter costs about half a millisecond."""
        cached = self._next.get(s.name)
        if cached is not None and cached[0] == s and cached[1] == after:
            return cached[2]
        upcoming = next_tick(s, after)
        self._next[s.name] = (s, after, upcoming)
        return upcoming

    def _baseline(self, s: Schedule, now: float) -> int:
        """First sight of a schedule: its ticks up to now are before its time."""
        baseline = int(now)
        key = self.keys.state(s.name)
        with translated(self.broker.url):
            pipe = self.broker.client.pipeline(transaction=True)
            pipe.hsetnx(key, "tick", baseline)
            pipe.pexpire(key, int(STATE_TTL * 1000))
            pipe.execute()
        return baseline

    def claim(self, s: Schedule, tick: int) -> bool:
        """Step 2: True when this firer won ``tick`` (or took over its stalled claim)."""
        job_id = tick_job_id(s.name, tick)
        keys = CRON_CLAIM.keys(state=self.keys.state(s.name), job=self.broker.keys.job(job_id),
                               paused=self.keys.paused())
        args = CRON_CLAIM.args(tick=tick, job_id=job_id, lease_ms=int(self.lease * 1000),
                               keep_ms=int(STATE_TTL * 1000), firer=self.ident, name=s.name)
        with translated(self.broker.url):
            return bool(self.broker.runner.run(self.broker.scripts.cron_claim, keys, args))

    def send(self, s: Schedule, tick: int) -> str:
        """Step 3: enqueue the tick's job and mark the claim sent; return the job id.

        Redis errors propagate and leave the claim unsent, to be taken over; a job that
        can never be enqueued (payload too large, ...) raises once, marked sent.
        """
        job_id = tick_job_id(s.name, tick)
        delay = self.rng.uniform(0, s.jitter) if s.jitter > 0 else None
        try:
            enqueue_call(tick_call(s, tick, delay), self.broker)
        except (BrokerUnavailable, BrokerError):
            raise
        except (JobsError, TypeError, ValueError):
            self._mark_sent(s, tick, job_id)
            raise
        self._mark_sent(s, tick, job_id)
        return job_id

    def _mark_sent(self, s: Schedule, tick: int, job_id: str) -> None:
        with translated(self.broker.url):
            self.broker.runner.run(self.broker.scripts.cron_sent,
                                   CRON_SENT.keys(state=self.keys.state(s.name)),
                                   CRON_SENT.args(tick=tick, job_id=job_id))

    def _fire(self, s: Schedule, tick: int, now: float, done: Pass) -> None:
        if self.claim(s, tick):  # else another supervisor fired it
            self._send_claimed(s, tick, now, done)

    def _take_over(self, s: Schedule, state: State, now: float, done: Pass) -> None:
        """A claim left unsent: after the lease, send its job unless it got in."""
        tick = state.tick
        if tick is None or state.job_id != tick_job_id(s.name, tick):
            return
        if self.claim(s, tick):
            self._send_claimed(s, tick, now, done)

    def _send_claimed(self, s: Schedule, tick: int, now: float, done: Pass) -> None:
        try:
            job_id = self.send(s, tick)
        except (BrokerUnavailable, BrokerError):
            raise
        except (JobsError, TypeError, ValueError) as exc:
            done.failed.append(Failed(s.name, tick, str(exc)))
            return
        done.fired.append(Fired(s.name, tick, job_id, now - tick))
