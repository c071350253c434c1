"""The children as they are: a record per worker process, the shared-memory slots they
report through, the signals sent to them, and the views others read from their slots
(the jobs whose leases to renew, the registry entry, the status line, counts by state).

The loop (``arbiter``) spawns, reaps and retires children; ``commands`` stops them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import msgspec
import psutil

from jobs.records import AttemptError
from supervisor.config import PoolSpec
from supervisor.runtime.duties import Claim
from supervisor.runtime.health import worker_health
from supervisor.runtime.holding import decode_held
from supervisor.runtime.scaling import POOL_MAX
from supervisor.runtime.slots import BOOTED, POKE, ChildState, Slots, SlotView

log = logging.getLogger("supervisor.runtime.arbiter")  # the loop's log lines, one name

MAX_SLOTS = 2 * POOL_MAX  # a rolling restart runs two generations side by side


class ChildInfo(msgspec.Struct, kw_only=True):
    pid: int
    slot: int
    age: int
    generation: int
    spawned: float
    spec: PoolSpec  # the pool it was started for, as it was then
    retiring: bool = False
    kill_reason: AttemptError | None = None
    release_on_kill: bool = False
    kill_at: float = 0.0  # SIGKILL due at this time after a SIGTERM grace (0: none pending)


def signal_group(pid: int, sig: int) -> None:
    """Signal the child's process group (its subprocesses too), else the child itself."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class Pool:
    def __init__(self) -> None:
        self.children: dict[int, ChildInfo] = {}
        self.slots = Slots(MAX_SLOTS)
        self.age = 0  # children spawned so far: a new child's age orders it among them
        # Busy and alive seconds of the children reaped so far, per pool: with the live
        # ones' they make counters that only grow. The lock makes a reap and a read of them
        # atomic.
        self._lock = threading.Lock()
        self._reaped: dict[str, tuple[float, float]] = {}

    def __iter__(self) -> Iterator[ChildInfo]:
        """A copy: the loop adds and removes children while the duties thread reads them."""
        return iter(list(self.children.values()))

    def __len__(self) -> int:
        return len(self.children)

    def reserve_slot(self) -> int:
        """A slot no child uses, cleared for the next one."""
        used = {c.slot for c in self}
        slot = next(i for i in range(MAX_SLOTS) if i not in used)
        self.slots.clear(slot)
        return slot

    def add(self, pid: int, slot: int, generation: int, spec: PoolSpec) -> None:
        self.age += 1
        info = ChildInfo(pid=pid, slot=slot, age=self.age, generation=generation,
                         spawned=time.monotonic(), spec=spec)
        with self._lock:
            self.children[pid] = info

    def of(self, pool: str) -> list[ChildInfo]:
        return [c for c in self if c.spec.name == pool]

    def running(self, generation: int | None = None) -> Counter[str]:
        """Children not retiring, per pool (of ``generation`` only, when given)."""
        return Counter(c.spec.name for c in self if not c.retiring
                       and (generation is None or c.generation == generation))

    def remove(self, pid: int) -> ChildInfo | None:
        """The record of a child that exited, if it was one of ours; its busy and alive
        seconds are kept (its slot is read before the caller clears it)."""
        with self._lock:
            info = self.children.pop(pid, None)
            if info is not None:
                busy, alive = self._seconds(info, time.monotonic())
                before = self._reaped.get(info.spec.name, (0.0, 0.0))
                self._reaped[info.spec.name] = (before[0] + busy, before[1] + alive)
        return info

    def view(self, c: ChildInfo) -> SlotView:
        return self.slots.read(c.slot)

    def busy(self, c: ChildInfo) -> bool:
        return self.view(c).state is ChildState.BUSY

    def booted(self, c: ChildInfo) -> bool:
        return self.view(c).state in BOOTED

    # -- signals -----------------------------------------------------------------------

    def kill(self, info: ChildInfo, error: AttemptError | None, release: bool = False,
             grace: float = 0.0) -> None:
        """SIGKILL the child's process group, after a SIGTERM and ``grace`` seconds if given."""
        if info.kill_reason is None and not info.release_on_kill:
            info.kill_reason = error
            info.release_on_kill = release
        if grace > 0 and not info.kill_at:
            info.kill_at = time.monotonic() + grace
            signal_group(info.pid, signal.SIGTERM)
            return
        signal_group(info.pid, signal.SIGKILL)

    def kill_all(self, release: bool) -> None:
        for info in self:
            self.kill(info, None, release=release)

    def terminate_all(self) -> None:
        """SIGTERM every child: each finishes its job, then exits (a graceful stop)."""
        for pid in self.children:
            signal_group(pid, signal.SIGTERM)

    def retire(self, c: ChildInfo, why: str) -> None:
        c.retiring = True
        log.info("worker %d retiring: %s", c.pid, why)
        signal_group(c.pid, signal.SIGTERM)

    def hold(self, pool: str, on: bool) -> None:
        """Pause (``on``) or resume the children of ``pool``. A busy one sees its byte
        after its job; the others are poked so a wait for work ends now."""
        for c in self.of(pool):
            self.slots.hold(c.slot, on)
            if self.view(c).state is not ChildState.BUSY:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c.pid, POKE)

    # -- views (also read on the duties thread) -----------------------------------------

    def claims(self) -> list[Claim]:
        """The jobs the children run, whose leases are to be renewed."""
        out = []
        for c in self:
            v = self.view(c)
            if v.state is ChildState.BUSY and v.job_id:
                out.append(Claim(v.job_id, v.queue, v.token))
            # Held jobs (a batch claim's, not started or not written yet) are under the
            # same lease.
            out += [Claim(h.job_id, h.queue, h.token) for h in decode_held(v.held)]
        return out

    def workers(self) -> list[dict[str, Any]]:
        """Each child as ``jobvisor workers`` shows it, with its health flag."""
        now = time.monotonic()
        out = []
        for c in self:
            v = self.view(c)
            try:
                rss = psutil.Process(c.pid).memory_info().rss
            except psutil.Error:
                rss = 0
            busy = v.state is ChildState.BUSY
            health, why = worker_health(v, now, c.spawned, rss, c.spec)
            busy_seconds, _ = self._seconds(c, now)
            out.append({"pid": c.pid, "pool": c.spec.name, "state": v.state.name.lower(),
                        "job": v.job_id,
                        "function": v.function,
                        "elapsed": round(now - v.started, 3) if busy else 0.0,
                        "jobs_done": v.jobs_done, "jobs_failed": v.jobs_failed, "rss": rss,
                        "uptime": round(now - c.spawned, 3),
                        "busy_seconds": round(busy_seconds, 3), "health": health.value,
                        "health_reason": why})
        return out

    def _seconds(self, c: ChildInfo, now: float) -> tuple[float, float]:
        v = self.view(c)
        busy = v.busy_time + (now - v.started if v.state is ChildState.BUSY else 0.0)
        return busy, now - c.spawned

    def seconds(self) -> dict[str, tuple[float, float]]:
        """Seconds this supervisor's workers spent on jobs, and were alive, summed over
        every worker it ran, per pool: their ratio over an interval is the pool's
        utilization."""
        with self._lock:
            now = time.monotonic()
            out = dict(self._reaped)
            for c in self.children.values():
                b, a = self._seconds(c, now)
                busy, alive = out.get(c.spec.name, (0.0, 0.0))
                out[c.spec.name] = (busy + b, alive + a)
        return out

    def status(self, queues: list[str]) -> str:
        views = [self.view(c) for c in self]
        busy = sum(1 for v in views if v.state is ChildState.BUSY)
        return f"{busy}/{len(views)} busy [{','.join(queues)}]"
