"""Rate limits and cluster-wide concurrency limits."""

from __future__ import annotations

import pytest

from jobs import ConfigurationError, JobState, Queue, Worker, job
from jobs.limits import set_limit, status
from jobs.rates import parse_rate
from tests import jobfuncs
from tests.helpers import assert_consistent, wait_until


def test_held_job_stays_queued_and_does_not_block_the_jobs_behind_it(broker, server):
    capped = [jobfuncs.capped.enqueue(server.url, "unused", 0) for _ in range(3)]
    plain = jobfuncs.add.enqueue(1, 1)
    w = Worker(broker=broker)
    first, second = w.claim(), w.claim()
    assert {first.id, second.id} == {capped[0].id, capped[1].id}
    # The third capped job is held back by max_concurrency=2; the plain job behind runs.
    third = w.claim()
    assert third.id == plain.id
    held = capped[2].refresh()
    assert held.state is JobState.QUEUED
    assert broker.client.hget(broker.keys.job(held.id), "hold") == b"fn:tests.jobfuncs:capped"
    assert broker.jobs.counts("default", ["queued"]) == {"queued": 0}
    [limit] = status(broker)
    assert (limit.name, limit.max_concurrency, limit.running, limit.held) == (
        "fn:tests.jobfuncs:capped", 2, 2, 1)
    assert w.claim() is None
    # A running capped job finishing frees its slot for the held job, in its old place.
    w.finish(first, *w.execute(first))
    assert capped[2].refresh().state is JobState.QUEUED
    assert w.claim().id == capped[2].id
    assert status(broker)[0].held == 0


def test_canceling_a_held_job(broker, server):
    jobs_ = [jobfuncs.capped.enqueue(server.url, "unused", 0) for _ in range(3)]
    w = Worker(broker=broker)
    w.claim(), w.claim()
    assert w.claim() is None
    assert jobs_[2].cancel()
    assert jobs_[2].refresh().state is JobState.CANCELED
    assert status(broker)[0].held == 0
    assert_consistent(broker, jobs_[2].id, "default")


def test_queue_limit_set_from_the_api(broker):
    set_limit(queue="reports", max_concurrency=1, broker=broker)
    q = Queue("reports", broker)
    a, b = q.enqueue(jobfuncs.add, 1, 1), q.enqueue(jobfuncs.add, 2, 2)
    w = Worker(["reports"], broker=broker)
    running = w.claim()
    assert running.id == a.id and w.claim() is None  # the limit holds b back
    w.finish(running, *w.execute(running))
    assert w.claim().id == b.id
    # Removing the limit lets held jobs go at once (the promoter's next pass).
    c = q.enqueue(jobfuncs.add, 3, 3)
    assert w.claim() is None
    set_limit(queue="reports", broker=broker)
    broker.maintenance.release_limits()
    assert w.claim().id == c.id


def test_rate_limit_paces_starts_and_drops_nothing(sup):
    r = sup(workers=2)
    r.wait_workers(2)
    q = Queue("default", r.broker)
    started = [q.enqueue(jobfuncs.rate_limited, str(i)) for i in range(15)]
    plain = q.enqueue(jobfuncs.add, 1, 1)
    assert plain.result(timeout=10) == 2  # not stuck behind the held jobs
    wait_until(lambda: all(j.refresh().state is JobState.COMPLETED for j in started),
               timeout=30, what="every rate-limited job to complete")
    times = sorted(j.result(timeout=1) for j in started)
    # Token bucket of 5, refilled 5 per second: job k starts no earlier than (k-4)/5 s
    # after the first (a little slack for clocks read in different processes).
    for k in range(5, 15):
        assert times[k] - times[0] >= (k - 4) / 5 - 0.05, (k, times[k] - times[0])
    assert times[-1] - times[0] < 10  # paced, not stalled


def test_concurrency_cap_holds_across_supervisors(sup, server, namespace):
    first, second = sup(workers=3), sup(workers=3)
    first.wait_workers(3), second.wait_workers(3)
    key = f"{namespace}:test:running"
    q = Queue("default", first.broker)
    capped = [q.enqueue(jobfuncs.capped, server.url, key, 0.2) for _ in range(12)]
    plain = [q.enqueue(jobfuncs.add, i, i) for i in range(4)]
    for j in plain:
        j.result(timeout=10)
    for j in capped:
        j.result(timeout=30)
    seen = [int(x) for x in first.broker.client.lrange(f"{key}:seen", 0, -1)]
    assert len(seen) == 12 and max(seen) <= 2
    assert max(j.refresh().finished_at for j in plain) < max(j.finished_at for j in capped)


@pytest.mark.parametrize("rate", ["fast", "10", "0/s", "5/parsec", "10/0s", "-1/m"])
def test_bad_rate_limits_are_refused(rate):
    with pytest.raises(ConfigurationError, match="rate_limit"):
        job(rate_limit=rate)


def test_rate_strings():
    assert parse_rate("100/m") == (100, 60_000)
    assert parse_rate("5/10s") == (5, 10_000)
    assert parse_rate("1000 / hour") == (1000, 3_600_000)
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        job(max_concurrency=0)


def test_queue_limit_from_config(sup, server, namespace):
    r = sup(workers=3, tail="\n[queue_limits.default]\nmax_concurrency = 1\n")
    r.wait_workers(3)
    # Published by the supervisor at start; jobs enqueued from then on carry the limit.
    wait_until(lambda: "q:default" in {s.name for s in status(r.broker)}, timeout=10)
    key = f"{namespace}:test:one-at-a-time"
    q = Queue("default", r.broker)
    capped = [q.enqueue(jobfuncs.capped, server.url, key, 0.05) for _ in range(5)]
    for j in capped:
        j.result(timeout=20)
    assert [int(x) for x in r.broker.client.lrange(f"{key}:seen", 0, -1)] == [1] * 5
    assert {s.name: s.max_concurrency for s in status(r.broker)}["q:default"] == 1
