"""Corrupt job records in Redis: the worker marks each job dead with a clear reason and
keeps running the others."""

from __future__ import annotations

import msgspec
import pytest

from jobs import JobState, Queue, Worker
from jobs.cluster import pause, resume
from jobs.records import JobSpec
from tests import jobfuncs
from tests.helpers import wait_until

_pack = msgspec.msgpack.encode
_GOOD_SPEC = _pack(JobSpec("tests.jobfuncs:add", [1, 2]))

CORRUPTIONS = {
    "truncated msgpack spec": ("spec", _GOOD_SPEC[:-2], "spec"),
    "spec of the wrong types": ("spec", _pack([5, "x"]), "spec"),
    "spec missing the function": ("spec", _pack([]), "spec"),
    "spec from an unknown schema version": (
        "spec", _pack(["tests.jobfuncs:add", [1, 2], {}, *[None] * 7, "v9"]), "spec"),
    "spec not msgpack at all": ("spec", b"\xc1garbage", "spec"),
    "error history unreadable": ("errs", b"\xc1", "error history"),
    "attempt count not a number": ("att", b"many", "att"),
    "priority not a number": ("pri", b"high", "pri"),
    "enqueue time not a number": ("te", b"yesterday", "te"),
}


@pytest.mark.parametrize("what", list(CORRUPTIONS))
def test_corrupt_record_is_dead_with_a_reason_and_the_worker_goes_on(broker, what):
    field, value, named = CORRUPTIONS[what]
    queue = Queue("default", broker)
    bad = queue.enqueue(jobfuncs.add, 1, 2)
    good = queue.enqueue(jobfuncs.add, 2, 2)
    broker.client.hset(broker.keys.job(bad.id), field, value)
    done = Worker(["default"], broker=broker).run_until_empty()
    assert done == {"dead": 1, "completed": 1}, what
    record = bad.refresh().record
    assert record.state is JobState.DEAD
    assert "corrupt" in record.errors[-1].message and named in record.errors[-1].message
    assert good.result(timeout=1) == 4
    assert queue.counts()["active"] == 0


def test_supervised_workers_survive_damaged_records(sup):
    """Under a real supervisor: each damaged job ends dead, no worker crashes or is
    replaced, and the next job runs."""
    run = sup(workers=2)
    pids = {p.pid for p in run.wait_workers(2)}
    queue = Queue("default", run.broker)
    pause("default", run.broker)  # damaged before any worker can claim them
    damaged = []
    for field, value, _ in CORRUPTIONS.values():
        job = queue.enqueue("tests.jobfuncs:add", 1, 2)
        run.broker.client.hset(run.broker.keys.job(job.id), field, value)
        damaged.append(job)
    resume("default", run.broker)
    for job in damaged:
        wait_until(lambda job=job: job.refresh().state is JobState.DEAD, timeout=15)
        assert job.record.errors[-1].type == "CorruptRecord"
    assert queue.enqueue("tests.jobfuncs:add", 2, 3).result(timeout=10) == 5
    assert {p.pid for p in run.wait_workers(2)} == pids
    assert "Traceback" not in run.logs()


def test_a_record_written_over_with_another_type_blocks_nothing(broker):
    """Another program overwrites a job's key with a string. Scripts that meet it read it
    as a record that is gone: the queue goes on to the next job, expired leases of other
    jobs are still reclaimed, and the supervisor's outbox drops the one outcome Redis
    refuses instead of holding every later one behind it."""
    from jobs.records import AttemptError, ErrorKind
    from jobs.worker import reclaim
    from supervisor.runtime.duties import Claim, Duties, Settlement

    queue = Queue("default", broker)
    overwritten = queue.enqueue(jobfuncs.add, 1, 2)
    good = queue.enqueue(jobfuncs.add, 2, 2)
    broker.client.delete(broker.keys.job(overwritten.id))
    broker.client.set(broker.keys.job(overwritten.id), "someone else's value")
    worker = Worker(["default"], broker=broker, lease=0.05)
    claimed = worker.claim()  # not an error: the overwritten entry is skipped
    assert claimed is not None and claimed.id == good.id

    # A claimed job whose key is overwritten mid-run, next to one whose lease expires.
    late = queue.enqueue(jobfuncs.add, 3, 3)
    running = worker.claim()
    assert running is not None and running.id == late.id
    broker.client.delete(broker.keys.job(late.id))
    broker.client.set(broker.keys.job(late.id), "someone else's value")

    def reclaimed() -> bool:
        reclaim(broker, ["default"])  # raised WRONGTYPE for every job, every time
        return good.refresh().state is not JobState.ACTIVE

    wait_until(reclaimed, timeout=10, what="the good job's expired lease to be reclaimed")

    lost = AttemptError(attempt=1, kind=ErrorKind.CRASH, type="WorkerCrashed",
                        message="worker crashed")
    again = queue.enqueue(jobfuncs.add, 4, 4)
    third = worker.claim()
    assert third is not None and third.id == again.id
    duties = Duties(broker, 60.0, ["default"], list, dict, lambda message: None)
    duties.settle(Settlement(Claim(late.id, "default", running.token), lost))
    duties.settle(Settlement(Claim(again.id, "default", third.token), lost))
    duties.shutdown(timeout=5.0)
    assert duties.pending == 0
    assert again.refresh().state is not JobState.ACTIVE  # the outcome behind it was written
