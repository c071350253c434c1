"""Job functions that misbehave are contained and reported; the worker carries on."""

from __future__ import annotations

import signal
import time

from jobs import ErrorKind, JobState, Queue
from tests.helpers import wait_until


def test_misbehaving_jobs_are_contained(sup):
    r = sup(workers=1, graceful=20.0)
    r.wait_workers(1)
    q = Queue("default", r.broker)
    # Megabytes on stdout: the job completes, the worker lives.
    assert q.enqueue("tests.jobfuncs:prints_a_lot", 4).result(timeout=30) == 4
    # A fork whose copy returns from the function: one outcome, no second worker.
    assert q.enqueue("tests.jobfuncs:forks_and_returns").result(timeout=10) == 1
    # sys.exit and os._exit: a failure and a crash, each reported; the pool recovers.
    exits = q.enqueue("tests.jobfuncs:exits")
    wait_until(lambda: exits.refresh().state is JobState.DEAD, timeout=10)
    assert exits.error.type == "SystemExit"
    hard = q.enqueue("tests.jobfuncs:hard_exit")
    wait_until(lambda: hard.refresh().state is JobState.DEAD, timeout=10)
    assert hard.error.kind is ErrorKind.CRASH and "exited with code 7" in hard.error.message
    # Unencodable result and an exception whose __str__ raises: dead with a reason.
    bad = q.enqueue("tests.jobfuncs:unencodable")
    wait_until(lambda: bad.refresh().state is JobState.DEAD, timeout=10)
    assert bad.error.type == "UnencodableResult"
    worker = r.wait_workers(1)[0]
    # A job replacing the worker's signal handlers: they are put back after it.
    assert q.enqueue("tests.jobfuncs:ignores_sigterm").result(timeout=10) == "changed"
    assert q.enqueue("tests.jobfuncs:add", 2, 3).result(timeout=10) == 5
    [worker] = r.wait_workers(1)
    assert worker.children() == []  # the forked copy exited and was reaped
    logs = r.logs()
    assert "changed the worker's SIGTERM handler: restored" in logs
    # The restored SIGTERM handler works: a graceful stop ends promptly.
    started = time.monotonic()
    r.proc.send_signal(signal.SIGTERM)
    assert r.proc.wait(15) == 0
    assert time.monotonic() - started < 10
    counts = Queue("default", r.broker).counts()
    assert counts["completed"] == 4 and counts["dead"] == 3 and counts["active"] == 0
