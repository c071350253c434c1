"""A worker's health flag: what the supervisor's loop watches, told before it acts.

The loop kills a child whose heartbeat stops or whose job passes its hard deadline, and
a child recycles once its memory passes ``max_memory_per_child``; the flag shows a
worker on its way there, so ``jobvisor workers``, the dashboard and the metrics name the
worker in trouble while it still runs.
"""

from __future__ import annotations

from enum import StrEnum

from supervisor.config import PoolSpec
from supervisor.runtime.child import HEARTBEAT_EVERY
from supervisor.runtime.slots import ChildState, SlotView

LATE_BEATS = 5  # heartbeats missed before a worker is called stalled
OVERRUN_SHARE = 0.8  # of the hard timeout, for a job without a soft timeout


class Health(StrEnum):
    OK = "ok"
    STALLED = "stalled"  # heartbeat late: the supervisor kills it at heartbeat_timeout
    OVERRUNNING = "overrunning"  # past its job's soft timeout, or most of its hard timeout
    MEMORY = "memory"  # RSS above max_memory_per_child: it recycles after its job
    SLOW_BOOT = "slow_boot"  # still booting after as long as a stall takes


def late_after(spec: PoolSpec) -> float:
    """Seconds of silence (or of booting) that make a worker late: a few missed beats,
    and never later than half the heartbeat timeout, so the flag comes before the kill."""
    return min(LATE_BEATS * HEARTBEAT_EVERY, spec.heartbeat_timeout / 2)


def worker_health(view: SlotView, now: float, spawned: float, rss: int,
                  spec: PoolSpec) -> tuple[Health, str]:
    """The worker's flag and why, in words (empty when ok); ``now`` and ``spawned`` are
    ``time.monotonic()`` values, ``rss`` in bytes, ``spec`` the worker's pool."""
    late = late_after(spec)
    if view.state in (ChildState.EMPTY, ChildState.BOOTING):
        if now - spawned > late:
            return Health.SLOW_BOOT, f"booting for {now - spawned:.1f} s"
        return Health.OK, ""
    if view.heartbeat and now - view.heartbeat > late:
        return Health.STALLED, (f"no heartbeat for {now - view.heartbeat:.1f} s (killed at "
                                f"{spec.heartbeat_timeout:g} s)")
    if view.state is ChildState.BUSY:
        overrun = _overrun(view, now)
        if overrun:
            return Health.OVERRUNNING, overrun
    limit = spec.max_memory_per_child
    if limit and rss > limit * 2**20:
        return Health.MEMORY, (f"RSS {rss // 2**20} MiB above max_memory_per_child {limit} "
                               "MiB: recycles after its job")
    return Health.OK, ""


def _overrun(view: SlotView, now: float) -> str:
    if view.soft_deadline and now > view.soft_deadline:
        return f"past its soft timeout by {now - view.soft_deadline:.1f} s"
    if view.deadline:
        limit = view.deadline - view.started
        if limit > 0 and now - view.started > OVERRUN_SHARE * limit:
            return f"at {(now - view.started) / limit:.0%} of its {limit:g} s hard timeout"
    return ""
