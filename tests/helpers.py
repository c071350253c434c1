"""Small helpers shared by tests: index consistency checks, bounded waits, stopping
the processes a test started."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

from jobs import Broker

T = TypeVar("T")
INDEXES = ("queued", "scheduled", "active", "completed", "dead", "canceled", "waiting")


def indexes_of(broker: Broker, job_id: str, queue: str) -> list[str]:
    c = broker.client
    return [s for s in INDEXES if c.zscore(broker.keys.state_index(queue, s), job_id) is not None]


def assert_consistent(broker: Broker, job_id: str, queue: str) -> str:
    """The job is in exactly one state index, and it is the state its record says."""
    found = indexes_of(broker, job_id, queue)
    state = broker.client.hget(broker.keys.job(job_id), "st")
    assert state is not None, f"{job_id}: record missing (indexes {found})"
    assert found == [state.decode()], f"{job_id}: record says {state!r}, indexes {found}"
    return state.decode()


def wait_until(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.005,
               what: str = "condition") -> T:
    """Poll a condition that has no event to block on (tests and benchmarks), with a bound."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> int | None:
    """SIGTERM a process we started, SIGKILL it after ``grace`` seconds; its exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
