import random
import threading
import time

import pytest
import redis

from jobs import (
    Backoff,
    BrokerError,
    ErrorKind,
    Job,
    JobCanceled,
    JobFailed,
    JobNotFound,
    JobState,
    Queue,
    ResultTimeout,
    StaleToken,
    Worker,
    reclaim,
    run_promoter,
)
from jobs.backoff import BackoffKind
from tests import jobfuncs
from tests.helpers import assert_consistent, wait_until


def run(broker, queues=("default",)):
    return Worker(list(queues), broker=broker).run_until_empty()


def test_priority_order_with_fifo_ties(broker):
    rng = random.Random(7)
    prios = [rng.choice([0, 10, 20, 30, 500, 1000]) for _ in range(600)]
    q = Queue("p")
    ids = [q.options(priority=p).enqueue("m:f", i).id for i, p in enumerate(prios)]
    expected = [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-prios[i], i))]
    w = Worker(["p"], broker=broker)
    got = [w.claim().id for _ in range(len(ids))]
    assert got == expected
    assert w.claim() is None


def test_queues_tried_in_configured_order(broker):
    Queue("low").enqueue("m:f", 1)
    Queue("high").enqueue("m:f", 2)
    w = Worker(["high", "low"], broker=broker)
    assert [w.claim().queue, w.claim().queue] == ["high", "low"]


def test_weighted_queues_take_from_both(broker):
    q1, q2 = Queue("w1"), Queue("w2")
    q1.enqueue_many([("m:f", i) for i in range(200)])
    q2.enqueue_many([("m:f", i) for i in range(200)])
    w = Worker(["w1", "w2"], broker=broker, weights=[3, 1])
    taken = [w.claim().queue for _ in range(100)]
    assert 55 <= taken.count("w1") <= 95 and taken.count("w2") >= 5


def test_claim_holds_lease_and_token(broker):
    j = jobfuncs.add.enqueue(1, 2)
    w = Worker(broker=broker, lease=60)
    c = w.claim()
    assert (c.id, c.attempt, c.queue) == (j.id, 1, "default")
    assert c.token.startswith(w.name)
    assert j.refresh().state is JobState.ACTIVE
    deadline = broker.client.zscore(broker.keys.active("default"), j.id) / 1000
    assert deadline - c.started_at == pytest.approx(60, abs=0.01)
    assert_consistent(broker, j.id, "default")


def test_blocking_claim_wakes_on_enqueue(broker):
    w = Worker(["wake"], broker=broker)
    got = {}

    def claim():
        got["job"] = w.claim(wait=5)
        got["at"] = time.monotonic()

    t = threading.Thread(target=claim)
    t.start()
    time.sleep(0.2)  # let the worker block in BLPOP first (nothing to synchronise on)
    sent = time.monotonic()
    Queue("wake").enqueue("m:f")
    t.join(5)
    assert got["job"] is not None
    assert got["at"] - sent < 0.05
    assert broker.client.llen(broker.keys.wake("wake")) == 0


def test_blocking_claim_times_out_empty(broker):
    started = time.monotonic()
    assert Worker(["none"], broker=broker).claim(wait=0.3) is None
    assert 0.25 <= time.monotonic() - started < 2


def test_success_result_and_timestamps(broker):
    j = jobfuncs.add.enqueue(20, 22)
    assert run(broker) == {"completed": 1}
    assert j.result(timeout=1) == 42
    r = j.refresh().record
    assert r.enqueued_at <= r.started_at <= r.finished_at
    assert j.attempts == 1 and j.error is None
    assert_consistent(broker, j.id, "default")


def test_retry_then_dead_keeps_every_error(broker):
    j = jobfuncs.always_fails.enqueue()
    assert run(broker) == {"scheduled": 2, "dead": 1}
    j.refresh()
    assert j.state is JobState.DEAD and j.attempts == 3
    assert [e.attempt for e in j.errors] == [1, 2, 3]
    assert all(e.type == "ValueError" and e.message == "boom" for e in j.errors)
    assert "raise ValueError" in j.error.traceback
    with pytest.raises(JobFailed, match="after 3 attempt.*ValueError: boom"):
        j.result(timeout=1)
    assert_consistent(broker, j.id, "default")


def test_dont_retry_on(broker):
    j = jobfuncs.key_error.enqueue()
    assert run(broker) == {"dead": 1}
    assert j.refresh().attempts == 1


def test_retry_on_filters(broker):
    a = jobfuncs.only_conn.enqueue("conn")
    b = jobfuncs.only_conn.enqueue("value")
    run(broker)
    assert a.refresh().attempts == 5 and a.state is JobState.DEAD
    assert b.refresh().attempts == 1 and b.state is JobState.DEAD


def test_retry_raised_by_job(broker):
    j = jobfuncs.asks_retry.enqueue()
    assert run(broker) == {"scheduled": 2, "dead": 1}
    assert j.refresh().attempts == 3


def test_fail_raised_by_job(broker):
    j = jobfuncs.gives_up.enqueue()
    assert run(broker) == {"dead": 1}
    assert j.refresh().error.type == "jobs.errors.Fail"
    assert j.error.message == "cannot ever work"


def test_system_exit_is_contained(broker):
    j = jobfuncs.exits.enqueue()
    run(broker)
    assert j.refresh().error.type == "SystemExit"


def test_exception_with_broken_str(broker):
    j = jobfuncs.raises_bad_str.enqueue()
    run(broker)
    assert j.refresh().error.message == "<unprintable BadStr>"


def test_retry_goes_to_scheduled_with_backoff(broker):
    j = Queue("default").enqueue(jobfuncs.slow_retry)
    run(broker)
    r = j.refresh().record
    assert r.state is JobState.SCHEDULED and r.attempts == 1
    assert r.due_at - r.started_at == pytest.approx(60, abs=1)
    assert_consistent(broker, j.id, "default")


def test_local_functions_are_refused():
    from jobs import ConfigurationError

    with pytest.raises(ConfigurationError, match="module level"):

        @jobfuncs.job
        def local() -> None: ...


def test_validation_failure_is_dead_at_once(broker):
    j = jobfuncs.add.enqueue("x", 1)
    assert run(broker) == {"dead": 1}
    e = j.refresh().error
    assert e.kind is ErrorKind.INVALID and j.attempts == 1
    assert "arguments do not match tests.jobfuncs:add" in e.message and "'a'" in e.message


def test_wrong_arity_is_dead(broker):
    j = jobfuncs.add.enqueue(1)
    run(broker)
    assert "missing a required argument: 'b'" in j.refresh().error.message


def test_unknown_function_is_dead_with_clear_message(broker):
    j = Queue("default").enqueue("os:system", "echo hi")
    k = Queue("default").enqueue("builtins:eval", "1+1")
    assert run(broker) == {"dead": 2}
    for x in (j, k):
        e = x.refresh().error
        assert e.kind is ErrorKind.INVALID and "unknown job function" in e.message
        assert "tests.jobfuncs" in e.message


def test_unencodable_result_is_dead(broker):
    j = jobfuncs.unencodable.enqueue()
    run(broker)
    assert "return value of tests.jobfuncs:unencodable cannot be stored" in j.refresh().error.message


def test_untyped_arguments_pass_through(broker):
    j = jobfuncs.untyped.enqueue({"a": 1})
    run(broker)
    assert j.result(timeout=1) == [{"a": 1}, 2]


def test_corrupt_spec_is_dead_and_worker_goes_on(broker):
    bad = Queue("default").enqueue("m:f")
    good = jobfuncs.add.enqueue(1, 1)
    broker.client.hset(broker.keys.job(bad.id), "spec", b"\xc1garbage")
    assert run(broker) == {"dead": 1, "completed": 1}
    assert "corrupt" in bad.refresh().error.message
    assert good.result(timeout=1) == 2


def test_on_dead_hook_enqueued_once_atomically(broker):
    j = jobfuncs.dies_with_hook.enqueue()
    run(broker)
    hook = Job.fetch(f"{j.id}.on_dead")
    assert hook.state is JobState.COMPLETED and hook.result(timeout=1) == j.id
    assert ("dead", j.id) in jobfuncs.CALLS


def test_stale_token_rejected(broker):
    j = jobfuncs.add.enqueue(1, 2)
    w = Worker(broker=broker, lease=0.0)
    c = w.claim()
    assert reclaim(broker, ["default"]) == [(j.id, "scheduled")]
    outcome, policy = w.execute(c)
    with pytest.raises(StaleToken):
        w.finish(c, outcome, policy)
    r = j.refresh().record
    assert r.state is JobState.SCHEDULED and r.result is None
    assert not w.release(c)
    assert broker.renew([(j.id, "default", c.token)], 30) == [0]


def test_lease_expiry_reclaim_spends_attempts_then_dead(broker):
    j = jobfuncs.add.enqueue(1, 2)  # default max_attempts 3
    w = Worker(broker=broker, lease=0.0)
    for expected in ("scheduled", "scheduled", "dead"):
        broker.client.hset(broker.keys.job(j.id), "due", 0)
        broker.maintenance.promote(["default"])
        assert w.claim() is not None
        assert reclaim(broker) == [(j.id, expected)]
        assert_consistent(broker, j.id, "default")
        broker.client.zadd(broker.keys.scheduled("default"), {j.id: 0}, xx=True)
    r = j.refresh().record
    assert r.attempts == 3 and [e.kind for e in r.errors] == [ErrorKind.LOST] * 3
    assert "worker lost" in r.errors[0].message


def test_renewed_lease_is_not_reclaimed(broker):
    jobfuncs.add.enqueue(1, 2)
    c = Worker(broker=broker, lease=0.0).claim()
    assert broker.renew([(c.id, c.queue, c.token)], 60) == []
    assert reclaim(broker) == []


def test_release_gives_back_without_spending_attempt(broker):
    first = jobfuncs.add.enqueue(1, 1)
    second = jobfuncs.add.enqueue(2, 2)
    w = Worker(broker=broker)
    c = w.claim()
    assert c.id == first.id and w.release(c)
    assert first.refresh().attempts == 0 and first.state is JobState.QUEUED
    assert w.claim().id == first.id
    assert second.refresh().state is JobState.QUEUED


def test_delayed_job_promoted_within_milliseconds(broker):
    stop = threading.Event()
    t = threading.Thread(target=run_promoter, args=(broker, stop, lambda: ["d"]))
    t.start()
    try:
        j = Queue("d").options(delay=0.4).enqueue("m:f")
        due = j.refresh().record.due_at
        wait_until(lambda: j.refresh().state is JobState.QUEUED, timeout=5, interval=0.001)
        server_now = broker.client.time()
        lateness = server_now[0] + server_now[1] / 1e6 - due
        assert 0 <= lateness < 0.05
        assert_consistent(broker, j.id, "d")
    finally:
        stop.set()
        broker.client.rpush(f"{broker.keys.ns}:timers", 1)
        t.join(5)


def test_promote_reports_next_due(broker):
    Queue("d").options(delay=10).enqueue("m:f")
    moved, next_in = broker.maintenance.promote(["d"])
    assert moved == 0 and 9 < next_in <= 10
    assert broker.maintenance.promote(["empty"]) == (0, None)


def test_result_blocks_until_done(broker):
    j = jobfuncs.add.enqueue(2, 2)
    got = {}

    def wait():
        got["value"] = j.result(timeout=10)
        got["at"] = time.monotonic()

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.2)  # the waiter is blocked in BLPOP by now; nothing to synchronise on
    finished = time.monotonic()
    run(broker)
    t.join(10)
    assert got["value"] == 4 and got["at"] - finished < 0.5


def test_result_timeout_and_canceled(broker):
    j = jobfuncs.add.enqueue(2, 2)
    with pytest.raises(ResultTimeout, match="still queued"):
        j.result(timeout=0.2)
    assert j.cancel("not needed")
    with pytest.raises(JobCanceled, match="not needed"):
        j.result(timeout=1)
    assert_consistent(broker, j.id, "default")


def test_result_ttl_expiry(broker):
    j = jobfuncs.add.options(result_ttl=0.3).enqueue(1, 1)
    run(broker)
    assert j.result(timeout=1) == 2
    wait_until(lambda: broker.jobs.fetch(j.id) is None, timeout=5)
    with pytest.raises(JobNotFound):
        Job.fetch(j.id)
    assert broker.client.zscore(broker.keys.completed("default"), j.id) is not None
    broker.maintenance.trim("default")  # the supervisors' maintenance sweep
    assert broker.client.zscore(broker.keys.completed("default"), j.id) is None


def test_completed_index_bounded_by_count(server, namespace):
    from tests.conftest import make_broker

    b = make_broker(server, namespace, max_completed=5)
    q = Queue("default", b)
    ids = [q.enqueue(jobfuncs.add, i, i).id for i in range(12)]
    Worker(broker=b).run_until_empty()
    assert q.counts()["completed"] == 12
    b.maintenance.trim("default")  # the supervisors' sweep bounds the index, deleting the oldest
    assert q.counts()["completed"] == 5
    assert b.jobs.fetch(ids[0]) is None and b.jobs.fetch(ids[-1]) is not None


def test_cancel_queued_and_scheduled_at_once_active_on_request(broker):
    a = jobfuncs.add.enqueue(1, 1)
    b = jobfuncs.add.options(delay=60).enqueue(1, 1)
    c = jobfuncs.add.enqueue(1, 1)
    assert a.cancel() and b.cancel()
    worker = Worker(broker=broker)
    claimed = worker.claim()
    assert claimed.id == c.id
    # A running job is only asked to stop: its supervisor kills it (tests/test_workflows.py).
    assert c.cancel("no longer needed")
    assert c.refresh().state is JobState.ACTIVE
    assert c.record.cancel_requested == "no longer needed"
    assert broker.jobs.cancel_requests([c.id, a.id]) == {c.id: "no longer needed"}
    for j in (a, b):
        assert j.refresh().state is JobState.CANCELED
        assert_consistent(broker, j.id, "default")
        assert not j.cancel()  # already final
    # Stale wake tokens are trimmed by the next claim that finds nothing.
    assert Worker(broker=broker).claim() is None
    assert broker.client.llen(broker.keys.wake("default")) == 0
    # A job that finished before its supervisor acted keeps its outcome; the request is gone.
    outcome, policy = worker.execute(claimed)
    assert worker.finish(claimed, outcome, policy) == "completed"
    assert broker.jobs.cancel_requests([c.id]) == {}


def test_dead_letter_list_requeue_purge(broker):
    q = Queue("default")
    dead = [jobfuncs.gives_up.enqueue().id for _ in range(3)]
    other = jobfuncs.key_error.enqueue().id
    run(broker)
    assert {r.id for r in q.dead()} == {*dead, other}
    assert [r.id for r in q.dead(function="tests.jobfuncs:key_error")] == [other]
    assert {r.id for r in q.dead(error_type="jobs.errors.Fail")} == set(dead)
    assert q.dead(older_than=3600) == [] and len(q.dead(newer_than=3600)) == 4
    assert q.requeue_dead(dead[0]) == 1
    r = Job.fetch(dead[0]).record
    assert r.state is JobState.QUEUED and r.attempts == 0 and len(r.errors) == 1
    assert_consistent(broker, dead[0], "default")
    assert q.requeue_dead(function="tests.jobfuncs:key_error") == 1
    assert q.purge_dead(dead[1]) == 1
    with pytest.raises(JobNotFound):
        Job.fetch(dead[1])
    assert q.purge_dead() == 1
    assert q.counts()["dead"] == 0 and q.counts()["queued"] == 2


def test_counts_per_state(broker):
    q = Queue("c")
    q.enqueue("m:f")
    q.options(delay=60).enqueue("m:f")
    Worker(["c"], broker=broker).claim()
    q.enqueue("m:f")
    counts = q.counts()
    assert counts["queued"] == 1 and counts["scheduled"] == 1 and counts["active"] == 1
    from jobs import queue_counts

    assert queue_counts()["c"] == counts


def test_backoff_kinds_and_cap():
    fixed = Backoff(kind=BackoffKind.FIXED, base=5, jitter=0)
    linear = Backoff(kind=BackoffKind.LINEAR, base=2, cap=7, jitter=0)
    expo = Backoff(kind=BackoffKind.EXPONENTIAL, base=1, factor=3, cap=100, jitter=0)
    assert [fixed.delay(n) for n in (1, 2, 9)] == [5, 5, 5]
    assert [linear.delay(n) for n in (1, 2, 3, 4)] == [2, 4, 6, 7]
    assert [expo.delay(n) for n in (1, 2, 3, 4, 5, 6)] == [1, 3, 9, 27, 81, 100]
    assert expo.delay(10_000) == 100
    jit = Backoff(kind="fixed", base=10, jitter=0.5)
    rng = random.Random(1)
    samples = [jit.delay(1, rng) for _ in range(200)]
    assert all(5 <= s <= 15 for s in samples) and len(set(samples)) > 100
    capped = Backoff(kind="fixed", base=10, cap=10, jitter=0.5)
    assert all(capped.delay(1, rng) <= 10 for _ in range(100))


def test_progress_context_and_log(broker):
    j = jobfuncs.reports_progress.enqueue(10_000)
    run(broker)
    assert j.result(timeout=1) == 10_000
    assert j.refresh().progress == {"done": 10_000, "total": 10_000, "message": "step 10000"}
    events = broker.client.xrange(broker.keys.events())
    progress = [e for _, e in events if e[b"e"] == b"progress"]
    assert 1 <= len(progress) < 20  # throttled: 10,000 reports became a handful of writes
    assert broker.jobs.job_log(j.id)[0].endswith("attempt 1 of 3")


def test_current_outside_a_job_is_an_error():
    from jobs import JobsError, current

    with pytest.raises(JobsError, match="only available inside a running job"):
        current()


def test_events_and_counters(broker):
    ok = jobfuncs.add.enqueue(1, 1)
    bad = jobfuncs.gives_up.enqueue()
    run(broker)
    kinds = [(e[b"e"].decode(), e.get(b"id", b"").decode())
             for _, e in broker.client.xrange(broker.keys.events())]
    assert ("enqueued", ok.id) in kinds and ("started", ok.id) in kinds
    assert ("completed", ok.id) in kinds and ("dead", bad.id) in kinds
    from jobs.timeseries import minute

    stats = broker.client.hgetall(broker.keys.stats(minute()))
    assert stats[b"default|completed"] == b"1" and stats[b"default|dead"] == b"1"
    assert stats[b"fn|tests.jobfuncs:add|completed"] == b"1"


def test_finish_and_claim_in_one_round_trip(broker):
    a = jobfuncs.add.enqueue(1, 1)
    b = jobfuncs.add.enqueue(2, 2)
    w = Worker(broker=broker)
    first = w.claim()
    outcome, policy = w.execute(first)
    state, following = w.finish_and_claim(first, outcome, policy)
    assert state == "completed" and following.id == b.id
    assert a.result(timeout=1) == 2 and b.refresh().state is JobState.ACTIVE
    outcome, policy = w.execute(following)
    state, nothing = w.finish_and_claim(following, outcome, policy)
    assert (state, nothing) == ("completed", None)
    assert b.result(timeout=1) == 4
    for j in (a, b):
        assert_consistent(broker, j.id, "default")


def test_finish_and_claim_with_a_stale_token_still_claims(broker):
    jobfuncs.add.enqueue(1, 1)
    nxt = jobfuncs.add.enqueue(2, 2)
    w = Worker(broker=broker, lease=0.0)
    first = w.claim()
    assert reclaim(broker) == [(first.id, "scheduled")]
    w.lease = 60
    outcome, policy = w.execute(first)
    state, following = w.finish_and_claim(first, outcome, policy)
    assert state is None and following.id == nxt.id
    assert_consistent(broker, first.id, "default")


def _completed_in_stats(broker) -> int:
    """Completions counted in the per-minute hashes (a test may cross a minute)."""
    keys = broker.client.scan_iter(match=broker.keys.stats(0)[:-1] + "*")
    return sum(int(broker.client.hget(key, "default|completed") or 0) for key in keys)


def test_due_counts_travel_with_the_next_outcome(broker):
    """Outcome counts that are due are written in the same write as the next outcome (no
    round trip of their own); counts Redis refuses altogether stay in the tally."""
    for i in range(4):
        jobfuncs.add.enqueue(i, i)
    w = Worker(broker=broker)
    job = w.claim()

    def finish(job):
        outcome, policy = w.execute(job)
        w.tally._last_flush = float("-inf")  # due now
        return w.finish_and_claim(job, outcome, policy)[1]

    def tallied():
        return sum(n for counts in w.tally._by_minute.values() for n, _ in counts.values())

    job = finish(job)  # the first completion is counted in the tally only
    assert _completed_in_stats(broker) == 0 and tallied() == 1
    job = finish(job)  # ...and written with the second outcome
    assert _completed_in_stats(broker) == 1 and tallied() == 1
    from jobs.timeseries import minute

    refusing = [broker.keys.stats(minute()), broker.keys.stats(minute() + 1),
                broker.keys.totals()]
    for key in refusing:  # every count refused (WRONGTYPE); the outcome itself is written
        if broker.client.exists(key):
            broker.client.rename(key, key + ":kept")
        broker.client.set(key, "written over")
    finish(job)
    assert tallied() == 2  # the refused count kept, with the third job's


def test_counts_applied_before_a_failing_script_are_not_written_again(broker):
    """The counts ahead of the hot script were applied when the script itself fails: they
    are not put back in the tally (they would be counted twice)."""
    jobfuncs.add.enqueue(1, 1)
    jobfuncs.add.enqueue(2, 2)
    w = Worker(broker=broker)
    first = w.claim()
    outcome, policy = w.execute(first)
    _, second = w.finish_and_claim(first, outcome, policy)  # counted in the tally
    broker.client.delete(broker.keys.active("default"))
    broker.client.set(broker.keys.active("default"), "written over")  # the script's ZREM fails
    w.tally._last_flush = float("-inf")
    outcome, policy = w.execute(second)
    with pytest.raises(BrokerError):
        w.finish_and_claim(second, outcome, policy)
    assert _completed_in_stats(broker) == 1  # the first job's count, once
    assert not w.tally._by_minute  # not put back to be written again


def test_completed_counts_are_flushed_by_the_worker(broker):
    from jobs.timeseries import minute

    jobfuncs.add.enqueue(1, 1)
    run(broker)
    stats = broker.client.hgetall(broker.keys.stats(minute()))
    assert stats[b"default|completed"] == b"1"
    assert int(broker.client.hget(broker.keys.totals(), "default|completed")) == 1


def test_a_resent_claim_returns_the_same_job(broker):
    a = jobfuncs.add.enqueue(1, 1)
    b = jobfuncs.add.enqueue(2, 2)
    k = broker.keys

    def claim(token: str, resent: str):
        keys = [k.paused(), k.events(), k.queued("default"), k.active("default"),
                k.wake("default")]
        return broker.runner.run(broker.scripts.claim, keys,
                                 [broker.prefix, token, 60_000, 100, resent, "default"])

    first = claim("tok-1", "0")
    again = claim("tok-1", "1")  # the runner's resend after the first reply was lost
    assert first[1] == again[1] == a.id.encode() and int(again[3]) == 1
    assert b.refresh().state is JobState.QUEUED
    assert broker.claim(["default"], "tok-2", 60).id == b.id
    assert broker.claim(["default"], "tok-3", 60) is None
    # A resend whose first call never ran (or took nothing) claims.
    c = jobfuncs.add.enqueue(3, 3)
    assert claim("tok-4", "1")[1] == c.id.encode()
    assert broker.claimed_by("tok-4", ["default"]) == [(c.id, "default", "tok-4")]
    assert broker.claimed_by("tok-3", ["default"]) == []


def test_the_runner_flags_a_resend(broker):
    script = broker.client.register_script("return ARGV[2]")
    assert broker.runner.run(script, [], ["x", "0"], resend_flag=1) == b"0"
    broker.runner._connection()._sock.close()  # the connection drops before the next send
    assert broker.runner.run(script, [], ["x", "0"], resend_flag=1) == b"1"
    assert broker.runner.run(script, [], ["x", "0"], resend_flag=1) == b"0"


def _cut_after_first_increment(monkeypatch) -> list[bytes]:  # type: ignore[no-untyped-def]
    """Arm a connection cut: the next write that carries counter increments reaches the
    server only up to its first increment, then the connection closes (as when a
    connection drops, or a failover cuts a write off). Returns what was let through."""
    from redis.connection import AbstractConnection

    real = AbstractConnection.send_packed_command
    through: list[bytes] = []
    increment = b"$7\r\nHINCRBY\r\n"

    def send(self, command, check_health=True):  # type: ignore[no-untyped-def]
        data = command.encode() if isinstance(command, str) else b"".join(command)
        first = data.find(increment)
        if through or first < 0 or data.find(increment, first + 1) < 0:
            return real(self, command, check_health)
        cut = data.rfind(b"*", 0, data.find(increment, first + 1))  # the second one's start
        through.append(data[:cut])
        real(self, [data[:cut]], check_health)
        self.disconnect()
        raise redis.ConnectionError("cut off mid-write")

    monkeypatch.setattr(AbstractConnection, "send_packed_command", send)
    return through


def _total_completed(broker) -> int:  # type: ignore[no-untyped-def]
    return int(broker.client.hget(broker.keys.totals(), "default|completed") or 0)


def test_counts_cut_off_mid_write_are_counted_once(broker, monkeypatch):
    """A flush of the counters that the connection cut off part-way is all or nothing on
    the server, so its retry counts each job once (not the part that got through twice)."""
    for i in range(3):
        jobfuncs.add.enqueue(i, i)
    w = Worker(broker=broker)
    for _ in range(3):
        job = w.claim()
        outcome, policy = w.execute(job)
        w.finish(job, outcome, policy)
    through = _cut_after_first_increment(monkeypatch)
    w.flush_counts()
    assert through, "the flush was not cut off"
    assert _total_completed(broker) == 3 and _completed_in_stats(broker) == 3


def test_counts_riding_with_an_outcome_cut_off_mid_write_are_counted_once(broker, monkeypatch):
    """The same for counts sent ahead of the next outcome: the outcome is resent alone and
    the counts, not known to be applied, are written again with a later call."""
    for i in range(3):
        jobfuncs.add.enqueue(i, i)
    w = Worker(broker=broker)
    job = w.claim()
    outcome, policy = w.execute(job)
    _, job = w.finish_and_claim(job, outcome, policy)  # counted in the tally
    outcome, policy = w.execute(job)
    _, job = w.finish_and_claim(job, outcome, policy)
    w.tally._last_flush = float("-inf")  # due: the counts ride with the next outcome
    through = _cut_after_first_increment(monkeypatch)
    outcome, policy = w.execute(job)
    state, following = w.finish_and_claim(job, outcome, policy)
    assert through, "the write was not cut off"
    assert state == "completed" and following is None
    w.flush_counts()
    assert _total_completed(broker) == 3 and _completed_in_stats(broker) == 3
