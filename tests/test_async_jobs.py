"""``async def`` jobs: run on one event loop per worker process, reused between jobs, with
soft and hard timeouts, cancellation and progress as for synchronous jobs."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from jobs import ErrorKind, JobState, JobTimeout, Queue, Worker
from jobs.aio import run_coroutine
from tests import hookfuncs
from tests.helpers import wait_until
from tests.procs import start_and_wait

MODULES = '["examples.cpu", "tests.jobfuncs", "tests.hookfuncs"]'


def test_an_async_job_runs_in_process_and_its_loop_is_reused(broker):
    a = hookfuncs.async_add.enqueue(2, 40)
    first, second = hookfuncs.loop_identity.enqueue(), hookfuncs.loop_identity.enqueue()
    assert Worker(broker=broker).run_until_empty() == {"completed": 3}
    assert a.result(timeout=1) == 42
    loop_a, pid_a, seen_a = first.result(timeout=1)
    loop_b, pid_b, seen_b = second.result(timeout=1)
    assert (loop_a, pid_a) == (loop_b, pid_b) and seen_b == seen_a + 1


def test_an_async_job_that_raises_is_retried_and_dies_like_a_sync_one(broker):
    j = hookfuncs.async_fails.enqueue()
    Worker(broker=broker).run_until_empty()
    assert j.refresh().state is JobState.DEAD
    assert (j.error.kind, j.error.type) == (ErrorKind.EXCEPTION, "KeyError")


def _alarm(signum: int, frame: object) -> None:
    raise JobTimeout("soft timeout reached")


def test_a_soft_timeout_while_awaiting_cancels_the_coroutine_then_raises():
    """SIGALRM (as the worker's soft timeout sends it) arrives while the loop waits."""
    cleaned = []

    async def waits() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append(True)

    previous = signal.signal(signal.SIGALRM, _alarm)
    started = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(JobTimeout):
            run_coroutine(waits())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert cleaned == [True] and time.monotonic() - started < 5
    assert run_coroutine(asyncio.sleep(0, "the loop goes on")) == "the loop goes on"


def test_a_soft_timeout_the_loop_caught_in_a_callback_still_ends_the_job():
    def fires() -> None:
        raise JobTimeout("soft timeout reached")

    async def waits() -> None:
        asyncio.get_running_loop().call_soon(fires)
        await asyncio.sleep(30)

    started = time.monotonic()
    with pytest.raises(JobTimeout):
        run_coroutine(waits())
    assert time.monotonic() - started < 5


def test_async_jobs_under_the_supervisor(sup, tmp_path):
    """Result, loop reuse, progress, soft timeouts (awaiting and running), hard timeout and
    cancel of a running async job, on real worker processes."""
    r = start_and_wait(sup, workers=2, modules=MODULES)
    q = Queue("default", r.broker)
    assert q.enqueue("tests.hookfuncs:async_add", 1, 2).result(timeout=10) == 3
    seen = [q.enqueue("tests.hookfuncs:loop_identity").result(timeout=10) for _ in range(6)]
    by_pid: dict[int, list[list[int]]] = {}
    for loop, pid, count in seen:
        by_pid.setdefault(pid, []).append([loop, count])
    for runs in by_pid.values():  # one loop per worker, its count going up job after job
        assert len({loop for loop, _ in runs}) == 1
        assert [c for _, c in runs] == list(range(runs[0][1], runs[0][1] + len(runs)))
    assert max(len(runs) for runs in by_pid.values()) >= 2

    p = q.enqueue("tests.hookfuncs:async_progress", 3, 0.3)
    wait_until(lambda: (p.refresh().progress or {}).get("done", 0) >= 1, timeout=10,
               what="progress from the async job")
    assert p.result(timeout=10) == 3 and p.refresh().progress["done"] == 3

    marker = tmp_path / "cleanup"
    soft = q.enqueue("tests.hookfuncs:async_sleeps_past_soft", str(marker))
    wait_until(lambda: soft.refresh().state is JobState.DEAD, timeout=10)
    assert (soft.error.kind, soft.error.type) == (ErrorKind.TIMEOUT, "jobs.errors.JobTimeout")
    assert soft.error.duration < 5 and marker.read_text() == "cleaned up\n"
    assert q.enqueue("tests.hookfuncs:async_spins_past_soft").result(timeout=10) == "cleaned up"

    hard = q.enqueue("tests.hookfuncs:async_runaway")
    wait_until(lambda: hard.refresh().state is JobState.DEAD, timeout=15)
    assert hard.error.kind is ErrorKind.TIMEOUT and hard.error.message == "hard timeout after 1 s"

    running = q.enqueue("tests.hookfuncs:async_sleep", 60)
    wait_until(lambda: running.refresh().state is JobState.ACTIVE, timeout=10)
    assert running.cancel("not needed")
    wait_until(lambda: running.refresh().state is JobState.CANCELED, timeout=10)
    assert running.record.cancel_reason == "not needed"
    assert q.enqueue("tests.hookfuncs:async_add", 2, 2).result(timeout=10) == 4
