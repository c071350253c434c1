"""Why a child is gone, in words: exit statuses, kills, and the errors jobs record."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from jobs.records import AttemptError, ErrorKind
from supervisor.runtime.slots import SlotView

KILL_METRIC = {"HardTimeout": "hard_timeout", "HeartbeatLost": "heartbeat_lost",
               "Canceled": "canceled"}


def oom_kills() -> int | None:
    """This process's cgroup OOM-kill count (cgroup v2 ``memory.events``), if readable."""
    try:
        rel = Path("/proc/self/cgroup").read_text().strip().split("::", 1)[1]
        events = Path("/sys/fs/cgroup", rel.lstrip("/"), "memory.events").read_text()
    except (OSError, IndexError):
        return None
    for line in events.splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill":
            return int(value)
    return None


def describe_exit(status: int, by_us: bool, oom_before: int | None = None) -> str:
    """``exited with code 3``, ``was killed by SIGSEGV``, or an OOM suspicion."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:  # real-time signals have no name
            name = f"signal {sig}"
        if sig == signal.SIGKILL and not by_us:
            now = oom_kills()
            if oom_before is not None and now is not None and now > oom_before:
                return f"was killed by {name}: OOM-killed (cgroup oom_kill count now {now})"
            return f"was killed by {name}, not sent by jobvisor: possibly OOM-killed"
        return f"was killed by {name}"
    return f"exited with code {os.WEXITSTATUS(status)}"


def hard_timeout(view: SlotView, now: float, worker: str) -> AttemptError:
    limit = view.deadline - view.started
    return AttemptError(attempt=view.attempt, kind=ErrorKind.TIMEOUT, type="HardTimeout",
                        message=f"hard timeout after {limit:g} s", duration=now - view.started,
                        at=time.time(), worker=worker)


def heartbeat_lost(view: SlotView, now: float, worker: str) -> AttemptError:
    return AttemptError(
        attempt=view.attempt, kind=ErrorKind.CRASH, type="HeartbeatLost",
        message=f"heartbeat lost: worker silent for {now - view.heartbeat:.1f} s",
        duration=now - view.started if view.started else 0.0, at=time.time(), worker=worker)


def crashed(view: SlotView, how: str, maxrss_kib: int, worker: str) -> AttemptError:
    return AttemptError(
        attempt=view.attempt, kind=ErrorKind.CRASH, type="WorkerCrashed",
        message=f"worker {how} while running the job (peak RSS {maxrss_kib // 1024} MiB)",
        duration=time.monotonic() - view.started if view.started else 0.0,
        at=time.time(), worker=worker)


def canceled(view: SlotView, reason: str, worker: str) -> AttemptError:
    """The attempt a cancel request ended; the job itself ends ``canceled`` (fail.lua)."""
    return AttemptError(
        attempt=view.attempt, kind=ErrorKind.EXCEPTION, type="Canceled",
        message=f"canceled while running: {reason}",
        duration=time.monotonic() - view.started if view.started else 0.0,
        at=time.time(), worker=worker)
