"""Rate limits, cluster-wide concurrency limits and named limits."""

from __future__ import annotations

import signal
from itertools import pairwise

import pytest

from jobs import (
    ConfigurationError,
    JobState,
    Queue,
    UnknownLimit,
    Worker,
    batch,
    enqueue_many,
    job,
)
from jobs.limits import set_limit, status
from jobs.rates import parse_rate
from supervisor.config import load_config
from supervisor.errors import ConfigError
from tests import jobfuncs, limitfuncs
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
    # 5/s, a sliding window: job k starts a second or more after job k-5 (a little slack
    # for clocks read in different processes).
    for k in range(5, 15):
        assert times[k] - times[k - 5] >= 1 - 0.05, (k, times[k] - times[k - 5])
    assert times[-1] - times[0] < 10  # paced, not stalled


def _most_in_a_window(starts_ms: list[int], period_ms: int) -> int:
    """The most starts in any window [t, t + period) of the period."""
    return max(sum(1 for u in starts_ms if t <= u < t + period_ms) for t in starts_ms)


def test_rate_is_a_sliding_window_across_workers(sup):
    """rate_limit="10/s" on 30 queued jobs and 3 workers: no window of one second sees
    more than 10 starts (the token bucket it replaced started 19 within one second)."""
    r = sup(workers=3, modules='["tests.limitfuncs"]')
    r.wait_workers(3)
    queued = enqueue_many([limitfuncs.paced.call(i) for i in range(30)], r.broker)
    wait_until(lambda: all(j.refresh().state is JobState.COMPLETED for j in queued),
               timeout=30, what="every paced job to complete")
    # Start times as the claims recorded them, in the server's milliseconds.
    starts = sorted(round(j.record.started_at * 1000) for j in queued)
    assert _most_in_a_window(starts, 1000) <= 10, starts
    for k in range(10, 30):
        assert starts[k] - starts[k - 10] >= 1000, (k, starts)
    assert starts[-1] - starts[0] < 6000, starts  # held jobs are released, not stranded


def _released_claim(w: Worker, broker):
    broker.maintenance.release_limits()  # the promoter's duty, run here
    return w.claim()


@pytest.mark.parametrize(("burst", "at_once", "gap"), [
    (None, 4, (1.0, 1.6)),  # sliding window: 4 at once, the 5th a second after the 1st
    (4, 4, (0.25, 0.9)),  # token bucket of 4: 4 at once, then one every 250 ms
    (1, 1, (0.25, 0.9)),  # bucket of 1: evenly spaced
])
def test_burst_is_a_token_bucket_the_default_a_window(broker, burst, at_once, gap):
    set_limit("api", rate_limit="4/s", burst=burst, broker=broker)
    q = Queue("default", broker).options(limits="api")
    for i in range(6):
        q.enqueue(jobfuncs.add, i, i)
    w = Worker(broker=broker)
    first = [w.claim() for _ in range(at_once)]
    assert all(first) and w.claim() is None  # the next is held back
    [limit] = status(broker)
    assert (limit.name, limit.rate, limit.burst, limit.held) == (
        "n:api", "4/1s", burst or 0, 6 - at_once)
    nxt = wait_until(lambda: _released_claim(w, broker), timeout=5, what="the next start")
    assert gap[0] <= nxt.started_at - first[0].started_at < gap[1]


def test_a_named_limit_is_shared_by_the_functions_that_name_it(broker):
    set_limit("shared-api", max_concurrency=2, broker=broker)
    fetches = [limitfuncs.fetch.enqueue(1), limitfuncs.fetch.enqueue(2)]
    upload = limitfuncs.upload.enqueue(3)
    plain = jobfuncs.add.enqueue(1, 1)
    w = Worker(broker=broker)
    running = [w.claim(), w.claim()]
    assert [j.id for j in running] == [fetches[0].id, fetches[1].id]
    assert w.claim().id == plain.id  # the upload is held by the limit both share
    assert upload.refresh().record.held_by == "n:shared-api"
    assert {s.name: (s.max_concurrency, s.running, s.held) for s in status(broker)} == {
        "n:shared-api": (2, 2, 1), "fn:tests.limitfuncs:upload": (5, 0, 0)}
    w.finish(running[0], *w.execute(running[0]))  # a fetch ending frees the upload
    assert w.claim().id == upload.id


def test_a_job_is_under_its_function_queue_and_named_limits_at_once(broker, raw):
    set_limit(queue="default", max_concurrency=10, broker=broker)
    set_limit("shared-api", max_concurrency=10, broker=broker)
    set_limit("tenant-7", max_concurrency=1, broker=broker)
    per_tenant = limitfuncs.upload.options(limits="tenant-7")
    first = per_tenant.enqueue(1)
    second = limitfuncs.upload.options(limits=["tenant-7", "shared-api"]).enqueue(2)
    other = limitfuncs.upload.enqueue(3)
    for j in (first, second):
        assert raw.hget(broker.keys.job(j.id), "lim") == (
            b"fn:tests.limitfuncs:upload|q:default|n:shared-api|n:tenant-7")
    w = Worker(broker=broker)
    assert w.claim().id == first.id
    assert w.claim().id == other.id  # the tenant's limit holds its second job only
    assert second.refresh().record.held_by == "n:tenant-7"
    assert {s.name: s.running for s in status(broker)} == {
        "fn:tests.limitfuncs:upload": 2, "q:default": 2, "n:shared-api": 2, "n:tenant-7": 1}


def test_changing_a_named_limit_applies_to_the_jobs_already_queued(broker):
    set_limit("slow", max_concurrency=5, broker=broker)
    q = Queue("default", broker).options(limits="slow")
    jobs_ = [q.enqueue(jobfuncs.add, i, i) for i in range(3)]
    set_limit("slow", max_concurrency=1, broker=broker)
    w = Worker(broker=broker)
    assert w.claim().id == jobs_[0].id and w.claim() is None
    set_limit("slow", broker=broker)  # removed: what it held goes
    broker.maintenance.release_limits()
    assert {w.claim().id, w.claim().id} == {jobs_[1].id, jobs_[2].id}


def test_an_undefined_limit_is_refused_and_nothing_is_written(broker, raw):
    with pytest.raises(UnknownLimit, match="limit 'nope' .*is not defined"):
        jobfuncs.add.options(limits="nope").enqueue(1, 1)  # no limit exists at all
    set_limit("known", max_concurrency=1, broker=broker)
    with pytest.raises(UnknownLimit, match="'never-defined'"):
        limitfuncs.orphan.enqueue()  # a function naming one
    # One script call (one queue): refused whole, atomically.
    with pytest.raises(UnknownLimit, match="'nope'"):
        enqueue_many([jobfuncs.add.options(limits="known").call(1, 1),
                      jobfuncs.add.options(limits=["known", "nope"]).call(2, 2)])
    # Several script calls (two queues) and a batch: refused before any is written.
    with pytest.raises(UnknownLimit, match="'nope'"):
        enqueue_many([jobfuncs.add.options(limits="known").call(1, 1),
                      jobfuncs.add.options(queue="other", limits="nope").call(2, 2)])
    with pytest.raises(UnknownLimit, match="'nope'"):
        batch([jobfuncs.add.call(1, 1),
               jobfuncs.add.options(queue="other", limits="nope").call(2, 2)]).enqueue(
            broker, batch_id="b-1")
    assert not raw.exists(broker.keys.batch("b-1"))
    assert broker.jobs.counts("default", ["queued"]) == {"queued": 0}
    assert broker.jobs.counts("other", ["queued"]) == {"queued": 0}
    assert jobfuncs.add.options(limits="known").enqueue(1, 1).refresh().state is JobState.QUEUED


def test_named_limits_from_config(sup):
    r = sup(workers=3, modules='["tests.limitfuncs"]',
            tail='\n[limits.config-api]\nmax_concurrency = 1\nrate_limit = "100/s"\n'
                 'burst = 5\n')
    r.wait_workers(3)
    wait_until(lambda: "n:config-api" in {s.name for s in status(r.broker)}, timeout=10)
    [limit] = [s for s in status(r.broker) if s.name == "n:config-api"]
    assert (limit.rate, limit.burst, limit.max_concurrency, limit.declared) == (
        "100/1s", 5, 1, True)
    calls = enqueue_many([limitfuncs.call_api.call(i) for i in range(6)], r.broker)
    for j in calls:
        j.result(timeout=20)
    spans = sorted((j.record.started_at, j.record.finished_at) for j in calls)
    assert all(nxt[0] >= prev[1] for prev, nxt in pairwise(spans))  # one at a time
    assert "limit 'never-defined' is named by @job(limits=...) but not defined" in r.logs()
    # Taken out of the config, it is gone at the reload, and its jobs are refused.
    r.config.write_text(r.text.replace("[limits.config-api]", "[limits.other-api]"))
    r.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "n:config-api" not in {s.name for s in status(r.broker)}, timeout=10,
               what="the limit to be removed")
    with pytest.raises(UnknownLimit, match="'config-api'"):
        enqueue_many([limitfuncs.call_api.call(1)], r.broker)


@pytest.mark.parametrize(("table", "error"), [
    ("[limits.empty]\n", "limits.empty limits nothing"),
    ('[limits."a b"]\nmax_concurrency = 1\n', "at `key` in `\\$.limits`"),
    ('[limits.b]\nmax_concurrency = 2\nburst = 3\n', "burst needs a rate_limit"),
    ('[queue_limits.default]\nrate_limit = "5/s"\nburst = 0\n', "burst must be"),
])
def test_bad_limit_tables_are_refused(tmp_path, table, error):
    path = tmp_path / "config.toml"
    path.write_text(table)
    with pytest.raises(ConfigError, match=error):
        load_config(path)


def test_limit_names_and_bursts_are_checked(broker):
    with pytest.raises(ConfigurationError, match="limit name"):
        job(limits=["has space"])
    with pytest.raises(ConfigurationError, match="limit name"):
        jobfuncs.add.options(limits=["a|b"]).enqueue(1, 1)
    with pytest.raises(ConfigurationError, match="burst needs a rate_limit"):
        job(burst=5)
    with pytest.raises(ConfigurationError, match="exactly one of"):
        set_limit("x", queue="q")


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
