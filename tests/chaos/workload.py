"""The chaos workload: a producer that rides out Redis trouble, a killer of busy
workers, and the small waits and figures the scenarios share."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from typing import Any

import psutil
import redis

from jobs import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    Call,
    EnqueueOptions,
    RedisSettings,
    enqueue_many,
)
from tests.chaos.ledger import Findings, Ledger, assert_ledger, audit, report, wait_settled
from tests.chaos.rig import FUNCTION, QUEUE, Supervisor, job_ids
from tests.helpers import wait_until

STARTED: list[Producer] = []  # every producer started, for the clean-up after each test


class Producer:
    """Enqueues ledger jobs continuously on a thread, riding out Redis trouble.

    Ids are chosen here, so a batch whose reply was lost is simply sent again (an
    existing id is left alone): an acknowledged id is one Redis said it stored.
    ``rate`` bounds jobs per second and ``backlog`` the queued jobs, so the drain after
    the run stays short on a busy machine.
    """

    def __init__(self, url: str, namespace: str, ledger_url: str, ledger_key: str, *,
                 tag: str, rate: float = 300.0, batch: int = 20, work_ms: float = 4.0,
                 backlog: int = 100, socket_timeout: float = 5.0, pad: str = "") -> None:
        self.broker = Broker(url, redis_settings=RedisSettings(
            namespace=namespace, socket_timeout=socket_timeout, connect_timeout=socket_timeout))
        self.args = (ledger_url, ledger_key, work_ms, pad)
        self.tag = tag
        self.rate = rate
        self.batch = batch
        self.backlog = backlog
        self.acked: list[str] = []
        self.acked_at: dict[str, float] = {}
        self.unacked: list[str] = []  # sent, never acknowledged: may or may not exist
        self.errors: Counter[str] = Counter()  # failed sends by error type
        self.longest_wait = 0.0  # longest time without a reply from Redis (outages)
        self._last_reply = time.monotonic()
        self._next = 0
        self._stop = threading.Event()
        self._quit = threading.Event()  # stop even in the middle of retrying a batch
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)
        self.crashed: BaseException | None = None

    def calls(self, ids: list[str], work_ms: float | None = None,
              priority: int | None = None) -> list[Call]:
        args = self.args if work_ms is None else (*self.args[:2], work_ms, *self.args[3:])
        options = EnqueueOptions(queue=QUEUE, priority=priority)
        return [Call(FUNCTION, args, {}, options.merged(EnqueueOptions(job_id=i))) for i in ids]

    def start(self) -> Producer:
        self._thread.start()
        STARTED.append(self)
        return self

    def abandon(self) -> None:
        """Stop at once, whatever is in hand: a test that failed before ``conclude`` must
        not leave a thread enqueueing (and opening spans) into the tests after it."""
        self._stop.set()
        self._quit.set()
        self._thread.join(10)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the batch in hand is acknowledged (or ``timeout`` passes)."""
        self._stop.set()
        self._thread.join(timeout)
        self._quit.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "producer did not stop"
        if self.crashed is not None:
            raise AssertionError(f"producer crashed: {self.crashed!r}") from self.crashed

    def wait_for(self, n: int, timeout: float = 60.0) -> None:
        wait_until(lambda: len(self.acked) >= n or self.crashed, timeout=timeout,
                   what=f"{n} acknowledged enqueues")

    def _run(self) -> None:
        try:
            pace = time.monotonic()
            while not self._stop.is_set():
                if self._backlog_full():
                    self._stop.wait(0.02)
                    continue
                ids = job_ids(self.tag, self._next, self.batch)
                self._next += self.batch
                self.send(ids)
                pace = max(pace + self.batch / self.rate, time.monotonic() - 1.0)
                self._stop.wait(max(0.0, pace - time.monotonic()))
        except BaseException as exc:  # reported by stop(): a producer must not crash
            self.crashed = exc

    def _replied(self) -> None:
        now = time.monotonic()
        self.longest_wait = max(self.longest_wait, now - self._last_reply)
        self._last_reply = now

    def _backlog_full(self) -> bool:
        try:
            queued = int(self.broker.client.zcard(self.broker.keys.queued(QUEUE)))
        except redis.RedisError:
            return False  # the enqueue below meets the outage and backs off
        self._replied()
        return queued >= self.backlog

    def send(self, ids: list[str], work_ms: float | None = None,
             priority: int | None = None) -> bool:
        """Enqueue ``ids`` until Redis acknowledges them; False if told to quit first."""
        failures = 0
        while True:
            try:
                enqueue_many(self.calls(ids, work_ms, priority), self.broker)
            except (BrokerUnavailable, BrokerError) as exc:
                self.errors[type(exc).__name__] += 1
                failures += 1
                if self._quit.is_set():
                    self.unacked += ids
                    return False
                self._quit.wait(min(1.0, 0.05 * 2 ** min(failures, 5)))
                continue
            now = time.time()
            self._replied()
            self.acked += ids
            for i in ids:
                self.acked_at[i] = now
            return True


class ChildKiller:
    """SIGKILLs a random busy child of the given supervisors every ``low..high`` seconds.

    After each kill it waits (bounded) until the job that child ran is accounted, that
    is no longer ``active`` under the dead child's claim token, and keeps that delay.
    """

    def __init__(self, supervisors: list[Supervisor], broker: Broker,
                 interval: tuple[float, float] = (0.1, 0.3), seed: int | None = None) -> None:
        self.supervisors = supervisors
        self.broker = broker
        self.interval = interval
        self.rng = random.Random(seed)
        self.kills: list[tuple[int, str]] = []
        self.accounted_s: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="killer", daemon=True)
        self.crashed: BaseException | None = None

    def start(self) -> ChildKiller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "child killer did not stop"
        if self.crashed is not None:
            raise AssertionError(f"child killer failed: {self.crashed!r}") from self.crashed

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.rng.uniform(*self.interval)):
                busy = [b for s in self.supervisors for b in s.busy()]
                if busy:
                    self._kill(*self.rng.choice(busy))
        except BaseException as exc:
            self.crashed = exc

    def _kill(self, proc: psutil.Process, job_id: str) -> None:
        try:
            proc.send_signal(signal.SIGKILL)  # psutil checks the pid was not reused
        except psutil.NoSuchProcess:
            return
        began = time.monotonic()
        pid = proc.pid
        self.kills.append((pid, job_id))
        key = self.broker.keys.job(job_id)
        mark = f":{pid}:"

        def accounted() -> bool:
            st, tok = self.broker.client.hmget(key, "st", "tok")
            return not (st == b"active" and tok is not None and mark in tok.decode())

        wait_until(accounted, timeout=30, interval=0.002,
                   what=f"job {job_id} of killed worker {pid} to be accounted")
        self.accounted_s.append(time.monotonic() - began)


def completed_count(broker: Broker) -> int:
    return int(broker.client.zcard(broker.keys.completed(QUEUE)))


def wait_progress(broker: Broker, since: int, timeout: float = 60.0) -> float:
    """Seconds until the completed count grows past ``since`` (the queue moves again)."""
    began = time.monotonic()

    def moved() -> bool:
        try:
            return completed_count(broker) > since
        except redis.RedisError:
            return False

    wait_until(moved, timeout=timeout, interval=0.002, what="jobs to complete again")
    return time.monotonic() - began


def keep_running(seconds: float, *watched: Supervisor, producer: Producer | None = None) -> None:
    """Let the workload and its faults run for ``seconds`` (the scenario's length, not a
    stand-in for a condition), failing at once if a supervisor or the producer dies."""
    end = time.monotonic() + seconds
    pause = threading.Event()
    while (left := end - time.monotonic()) > 0:
        for sup in watched:
            assert sup.alive(), f"supervisor {sup.pid} died: {sup.logs()[-2000:]}"
        if producer is not None:
            assert producer.crashed is None, f"producer crashed: {producer.crashed!r}"
        pause.wait(min(0.1, left))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)


def worker_pids(*supervisors: Supervisor) -> set[int]:
    return {c.pid for s in supervisors for c in s.children()}


def assert_pool_intact(supervisors: list[Supervisor], before: set[int], during: str) -> None:
    """The fault killed no supervisor and no worker, and nothing logged a traceback."""
    assert all(s.alive() for s in supervisors)
    assert worker_pids(*supervisors) == before, f"a worker crashed {during}"
    for s in supervisors:
        assert "Traceback" not in s.logs()


def conclude(scenario: str, fault: str, producer: Producer, ledger: Ledger, began: float, *,
             broker: Broker | None = None, also_acked: list[str] | None = None,
             audit_options: dict[str, Any] | None = None, **figures: Any) -> Findings:
    """The end every fault test shares: stop producing, wait until every job has settled,
    audit the ledger against the server, report the figures, and fail on a lost job or an
    unexplained duplicate. The scenario's own assertions follow on what it returns.
    ``also_acked``: ids acknowledged by another producer that has stopped already."""
    broker = broker or producer.broker
    producer.stop()
    drain = wait_settled(broker, timeout=60)
    found = audit(broker, ledger, producer.acked + (also_acked or []),
                  maybe=producer.unacked, **(audit_options or {}))
    report(scenario, found, fault=fault, **figures, drain_s=round(drain, 3),
           wall_s=round(time.monotonic() - began, 2))
    assert_ledger(found)
    return found


def conclude_kills(scenario: str, fault: str, producer: Producer, ledger: Ledger,
                   began: float, killer: ChildKiller, broker: Broker,
                   duration: float) -> Findings:
    """``conclude`` for a scenario that SIGKILLs workers holding work they have not
    started or not written: each kill is a crash, and spends at most one attempt (the
    running job's), because what a dead worker held goes back uncharged."""
    f = conclude(scenario, fault, producer, ledger, began, broker=broker,
                 faults=len(killer.kills), duration_s=duration,
                 recovery_s=percentile(killer.accounted_s, 1.0))
    assert len(killer.kills) >= 3, "the scenario must actually kill workers"
    assert set(f.causes) <= {"WorkerCrashed"}, f.causes
    assert sum(f.attempts_spent.values()) <= len(killer.kills), (f.attempts_spent,
                                                                 len(killer.kills))
    return f
