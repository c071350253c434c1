"""Dependencies, chains, batches, uniqueness and cancellation of running jobs."""

from __future__ import annotations

import threading

import pytest

import jobs
from jobs import (
    ConfigurationError,
    JobCanceled,
    JobNotFound,
    JobState,
    Queue,
    Worker,
    batch,
    chain,
)
from jobs.options import unique_digest
from jobs.query import batch_members, batch_view, list_batches
from tests import jobfuncs
from tests.conftest import make_broker
from tests.helpers import assert_consistent, wait_until


def ns_keys(broker) -> list[bytes]:
    return sorted(broker.client.scan_iter(match=f"{broker.keys.ns}:*"))


def run_all(broker) -> None:
    Worker(["default", "other"], broker=broker).run_until_empty()


# -- dependencies --------------------------------------------------------------------------

def test_job_waits_for_every_parent(broker):
    a = jobfuncs.add.enqueue(1, 1)
    b = jobfuncs.add.options(delay=3600).enqueue(2, 2)
    child = jobfuncs.add.options(depends_on=[a, b.id]).enqueue(3, 3)
    assert child.refresh().state is JobState.WAITING and child.record.waiting_on == 2
    assert_consistent(broker, child.id, "default")
    worker = Worker(broker=broker)
    assert worker.run_until_empty() == {"completed": 1}  # only a: the child still waits
    assert child.refresh().state is JobState.WAITING and child.record.waiting_on == 1
    broker.client.hset(broker.keys.job(b.id), "due", 0)
    broker.client.zadd(broker.keys.scheduled("default"), {b.id: 0})
    assert worker.run_until_empty() == {"completed": 2}  # b, then the released child
    assert child.result(timeout=1) == 6
    assert_consistent(broker, child.id, "default")


def test_dead_parent_cancels_dependents_down_the_tree(broker):
    parent = jobfuncs.gives_up.enqueue()
    child = jobfuncs.add.options(depends_on=[parent]).enqueue(1, 1)
    grandchild = jobfuncs.add.options(depends_on=[child]).enqueue(2, 2)
    runs_anyway = jobfuncs.add.options(depends_on=[parent], on_parent_failure="run").enqueue(5, 5)
    run_all(broker)
    assert parent.refresh().state is JobState.DEAD
    assert child.refresh().state is JobState.CANCELED
    assert child.record.cancel_reason == f"parent {parent.id} ended dead"
    assert grandchild.refresh().record.cancel_reason == f"parent {child.id} ended canceled"
    with pytest.raises(JobCanceled, match="ended dead"):
        child.result(timeout=1)
    assert runs_anyway.result(timeout=1) == 10
    for j in (parent, child, grandchild, runs_anyway):
        assert_consistent(broker, j.id, "default")


def test_parent_already_final_when_the_child_is_enqueued(broker):
    done = jobfuncs.add.enqueue(1, 1)
    dead = jobfuncs.gives_up.enqueue()
    run_all(broker)
    assert jobfuncs.add.options(depends_on=[done]).enqueue(1, 2).refresh().state is JobState.QUEUED
    canceled = jobfuncs.add.options(depends_on=[done, dead]).enqueue(1, 2).refresh()
    assert canceled.state is JobState.CANCELED
    assert canceled.record.cancel_reason == f"parent {dead.id} ended dead"


def test_unknown_parent_is_refused_and_nothing_is_written(broker):
    before = ns_keys(broker)
    with pytest.raises(JobNotFound, match="depends on job nope-123, which does not exist"):
        jobfuncs.add.options(depends_on=["nope-123"]).enqueue(1, 1)
    with pytest.raises(JobNotFound):
        jobs.enqueue_many([jobfuncs.shout.call("x"), jobfuncs.add.call(1, 1),
                           jobfuncs.add.options(depends_on=["nope-123"]).call(1, 1)], broker)
    assert ns_keys(broker) == before


@pytest.mark.parametrize("bad, message", [
    ({"depends_on": "abc"}, "depends_on must be a list"),
    ({"depends_on": [3]}, "depends_on takes job ids"),
    ({"on_parent_failure": "ignore"}, "on_parent_failure must be"),
    ({"pass_result": True}, "pass_result=True needs exactly one job"),
    ({"unique_key": "k"}, "unique_key needs unique_for"),
    ({"unique_for": 5, "unique_until": "forever"}, "unique_until must be"),
    ({"unique_for": -1}, "unique_for must be a number of seconds"),
])
def test_bad_workflow_options_are_refused(broker, bad, message):
    with pytest.raises(ConfigurationError, match=message):
        jobfuncs.add.options(**bad).enqueue(1, 1)
    assert broker.jobs.counts("default", ["queued"]) == {"queued": 0}


# -- chains ---------------------------------------------------------------------------------

def test_chain_passes_results_in_order(broker):
    links = chain(jobfuncs.add.call(1, 2), jobfuncs.add.call(10), jobfuncs.add.call(100),
                  pass_results=True).enqueue(broker)
    assert [j.refresh().state for j in links] == [JobState.QUEUED, JobState.WAITING,
                                                   JobState.WAITING]
    run_all(broker)
    assert [j.result(timeout=1) for j in links] == [3, 13, 113]


def test_chain_without_passing_results_across_queues(broker):
    links = chain(jobfuncs.shout.call("a"), jobfuncs.add.call(1, 1)).enqueue(broker)
    assert links[1].refresh().state is JobState.WAITING
    run_all(broker)
    assert [j.result(timeout=1) for j in links] == ["A", 2]


def test_failed_link_stops_the_chain_and_cancels_the_rest(broker):
    links = chain(jobfuncs.add.call(1, 1), jobfuncs.gives_up.call(), jobfuncs.add.call(2, 2),
                  jobfuncs.add.call(3, 3)).enqueue(broker)
    run_all(broker)
    states = [j.refresh().state for j in links]
    assert states == [JobState.COMPLETED, JobState.DEAD, JobState.CANCELED, JobState.CANCELED]
    assert links[2].record.cancel_reason == f"parent {links[1].id} ended dead"
    assert links[3].record.cancel_reason == f"parent {links[2].id} ended canceled"


def test_canceling_a_waiting_link_cancels_the_links_after_it(broker):
    links = chain(jobfuncs.add.call(1, 1), jobfuncs.add.call(2, 2),
                  jobfuncs.add.call(3, 3)).enqueue(broker)
    assert links[1].cancel("changed my mind")
    assert links[2].refresh().record.cancel_reason == f"parent {links[1].id} ended canceled"
    assert Worker(broker=broker).run_until_empty() == {"completed": 1}


# -- batches --------------------------------------------------------------------------------

def test_batch_progress_and_success_callbacks(broker, tmp_path):
    log = tmp_path / "callbacks"
    hook = jobfuncs.batch_callback.call(str(log))
    handle = batch([jobfuncs.add.call(i, i) for i in range(10)], name="ten sums",
                   on_success=hook, on_complete=hook, on_failure=hook).enqueue(broker)
    p = handle.progress()
    assert (p.total, p.completed, p.failed, p.canceled, p.pending, p.finished) == (
        10, 0, 0, 0, 10, False)
    assert len(handle.jobs()) == 10
    Worker(broker=broker).run_until_empty(max_jobs=4)
    assert handle.progress().completed == 4 and handle.progress().pending == 6
    run_all(broker)
    p = handle.wait(timeout=5)
    assert (p.completed, p.pending, p.finished) == (10, 0, True)
    assert handle.callback("success").refresh().state is JobState.COMPLETED
    assert handle.callback("complete").refresh().state is JobState.COMPLETED
    with pytest.raises(JobNotFound):
        handle.callback("failure").refresh()
    assert log.read_text().splitlines() == [handle.id, handle.id]


def test_batch_with_a_dead_member_runs_on_failure(broker, tmp_path):
    log = tmp_path / "callbacks"
    handle = batch([jobfuncs.add.call(1, 1), jobfuncs.gives_up.call(), jobfuncs.add.call(2, 2)],
                   on_success=jobfuncs.batch_callback.call(str(log)),
                   on_failure=jobfuncs.batch_callback.call(str(log))).enqueue(broker)
    run_all(broker)
    p = handle.wait(timeout=5)
    assert (p.total, p.completed, p.failed, p.pending) == (3, 2, 1, 0)
    assert handle.callback("failure").refresh().state is JobState.COMPLETED
    with pytest.raises(JobNotFound):
        handle.callback("success").refresh()
    # Requeueing the dead member after the batch ended counts it again, fires nothing again.
    dead = Queue("default", broker).dead()[0]
    assert Queue("default", broker).requeue_dead(dead.id) == 1
    assert handle.progress().failed == 0 and handle.progress().pending == 1
    run_all(broker)
    assert log.read_text().splitlines() == [handle.id]


def test_batch_callbacks_fire_once_when_members_finish_together(server, namespace, tmp_path):
    """Eight workers, each with its own connection, finish members at the same moments."""
    log = tmp_path / "callbacks"
    brokers = [jobs.connect(server.url, redis_settings=jobs.RedisSettings(namespace=namespace))
               for _ in range(8)]
    handles = [batch([jobfuncs.add.call(i, 0) for i in range(size)],
                     on_complete=jobfuncs.batch_callback.call(str(log))).enqueue(brokers[0])
               for size in (2, 8, 8, 64)]
    start = threading.Barrier(len(brokers))

    def work(b) -> None:
        start.wait(timeout=10)
        Worker(broker=b).run_until_empty()

    threads = [threading.Thread(target=work, args=(b,)) for b in brokers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for h in handles:
        assert h.wait(timeout=10).finished
    run_all(brokers[0])
    assert sorted(log.read_text().splitlines()) == sorted(h.id for h in handles)
    for b in brokers:
        b.client.close()


def test_bad_batches_are_refused(broker):
    with pytest.raises(ConfigurationError, match="at least one job"):
        batch([])
    with pytest.raises(ConfigurationError, match="must be a new job"):
        batch([jobfuncs.add.options(job_id="fixed").call(1, 1)])
    with pytest.raises(ConfigurationError, match="on_success takes"):
        batch([jobfuncs.add.call(1, 1)], on_success=42).enqueue(broker)  # type: ignore[arg-type]
    assert ns_keys(broker) == []


def test_batch_id_makes_the_enqueue_idempotent(broker):
    first = batch([jobfuncs.add.call(1, 1)]).enqueue(broker, batch_id="nightly-2026-11-23")
    again = batch([jobfuncs.add.call(1, 1)]).enqueue(broker, batch_id="nightly-2026-11-23")
    assert first.id == again.id and len(again.jobs()) == 1
    assert broker.jobs.counts("default", ["queued"]) == {"queued": 1}


def test_batches_are_listed_newest_first_a_page_at_a_time_with_callbacks(broker):
    hooks = {"on_success": jobfuncs.record.call(), "on_failure": jobfuncs.record.call()}
    handles = [batch([jobfuncs.add.call(i, n) for i in range(n)], name=f"b{n}", **hooks)
               .enqueue(broker) for n in range(1, 6)]
    seen, cursor, pages = [], None, 0
    while True:
        page = list_batches(broker, cursor, limit=2)
        seen += page.batches
        pages += 1
        if page.next is None:
            break
        cursor = page.next
    assert [v.id for v in seen] == [h.id for h in reversed(handles)] and pages == 3
    assert [v.name for v in seen] == ["b5", "b4", "b3", "b2", "b1"]
    assert all(v.progress == h.progress() for v, h in zip(seen, reversed(handles), strict=True))
    assert [(c.kind, c.state) for c in seen[0].callbacks] == [("success", "pending"),
                                                               ("failure", "pending")]
    Queue("default", broker).enqueue(jobfuncs.add, 1, 1)  # not in any batch
    dead = batch([jobfuncs.add.call(1, 1), jobfuncs.gives_up.call()],
                 on_complete=jobfuncs.record.call(), **hooks).enqueue(broker)
    run_all(broker)
    views = {v.id: v for v in list_batches(broker).batches}
    assert len(views) == 6 and all(v.progress.finished for v in views.values())
    assert views[dead.id].progress == dead.progress()
    assert [(c.kind, c.job_id, c.state) for c in views[dead.id].callbacks] == [
        ("success", f"{dead.id}.on_success", "not run"),
        ("failure", f"{dead.id}.on_failure", "completed"),
        ("complete", f"{dead.id}.on_complete", "completed")]
    assert views[dead.id].finished_at >= views[dead.id].created_at > 0
    members = batch_members(broker, handles[2].id, offset=1, limit=2)
    assert [r.spec.args for r in members.records] == [[1, 3], [2, 3]]
    assert (members.ids, members.total, members.next_offset) == (
        [r.id for r in members.records], 3, None)
    with pytest.raises(JobNotFound, match="no batch 'nope'"):
        batch_view(broker, "nope")


def test_a_batch_leaves_the_index_when_its_record_expires(broker, server, namespace):
    """The batch that finishes next trims the ids whose records have expired."""
    b = make_broker(server, namespace, dead_ttl=0.3)  # ``broker`` cleans the namespace up
    try:
        old = batch([jobfuncs.add.call(1, 1)]).enqueue(b)
        run_all(b)
        wait_until(lambda: not b.client.exists(b.keys.batch(old.id)), timeout=5,
                   what="the finished batch's record to expire")
        assert b.client.zscore(b.keys.batches(), old.id) is not None  # not trimmed yet...
        assert list_batches(b).batches == []  # ... but never listed
        new = batch([jobfuncs.add.call(2, 2)]).enqueue(b)
        assert [v.id for v in list_batches(b).batches] == [new.id]
        run_all(b)
        assert b.client.zrange(b.keys.batches(), 0, -1) == [new.id.encode()]
        assert b.client.zrange(b.keys.batches_ending(), 0, -1) == [new.id.encode()]
    finally:
        b.client.close()


# -- uniqueness ------------------------------------------------------------------------------

def test_unique_job_returns_the_existing_one_until_it_finishes(broker):
    a = jobfuncs.add.options(unique_for=60).enqueue(1, 2)
    assert jobfuncs.add.options(unique_for=60).enqueue(1, 2).id == a.id
    other_args = jobfuncs.add.options(unique_for=60).enqueue(2, 1)
    assert other_args.id != a.id
    many = jobs.enqueue_many([jobfuncs.add.options(unique_for=60).call(1, 2)] * 3, broker)
    assert {j.id for j in many} == {a.id}
    worker = Worker(broker=broker)
    claimed = worker.claim()
    assert claimed.id == a.id  # active still holds the key
    assert jobfuncs.add.options(unique_for=60).enqueue(1, 2).id == a.id
    worker.finish(claimed, *worker.execute(claimed))
    fresh = jobfuncs.add.options(unique_for=60).enqueue(1, 2)
    assert fresh.id != a.id and fresh.refresh().state is JobState.QUEUED


def test_unique_for_the_whole_window_and_explicit_keys(broker):
    a = jobfuncs.add.options(unique_for=60, unique_until="window", unique_key="k1").enqueue(1, 1)
    Worker(broker=broker).run_until_empty()
    # Different arguments, same explicit key, finished job: still inside the window.
    again = jobfuncs.add.options(unique_for=60, unique_until="window", unique_key="k1").enqueue(5, 5)
    assert again.id == a.id and again.refresh().state is JobState.COMPLETED
    call = jobfuncs.add.options(unique_for=0.05, unique_until="window").call(7, 7)
    short = jobs.enqueue_many([call], broker)[0]
    key = broker.keys.unique(unique_digest(call, None))
    assert broker.client.get(key) == short.id.encode()
    wait_until(lambda: not broker.client.exists(key), timeout=5, what="the window to pass")
    assert jobs.enqueue_many([call], broker)[0].id != short.id


def test_job_decorator_makes_a_function_unique(broker):
    a = jobfuncs.unique_report.enqueue("2026-11-23")
    assert jobfuncs.unique_report.enqueue("2026-11-23").id == a.id
    assert jobfuncs.unique_report.enqueue("2026-11-24").id != a.id
    assert Queue("default", broker).enqueue(jobfuncs.unique_report, "2026-11-23").id == a.id


# -- cancellation of running jobs --------------------------------------------------------------

def test_cancel_running_job_kills_its_worker(sup):
    r = sup(workers=2)
    r.wait_workers(2)
    q = Queue("default", r.broker)
    running = q.options(max_attempts=3).enqueue("examples.cpu:spin", 60)
    after = q.options(depends_on=[running]).enqueue("tests.jobfuncs:add", 1, 1)
    wait_until(lambda: running.refresh().state is JobState.ACTIVE, timeout=10)
    assert running.cancel("operator said stop")
    wait_until(lambda: running.refresh().state is JobState.CANCELED, timeout=10,
               what="the running job to end canceled")
    assert running.record.cancel_reason == "operator said stop"
    assert running.error.type == "Canceled" and running.attempts == 1
    assert after.refresh().state is JobState.CANCELED
    with pytest.raises(JobCanceled):
        running.result(timeout=1)
    assert r.broker.client.scard(r.broker.keys.cancels()) == 0
    r.wait_workers(2)
    assert q.enqueue("tests.jobfuncs:add", 2, 2).result(timeout=10) == 4
    assert "canceled while running (operator said stop)" in r.logs()


# -- starvation guard ---------------------------------------------------------------------------

def test_starvation_guard_lifts_jobs_that_waited_too_long(broker):
    low = jobfuncs.add.options(priority="low").enqueue(0, 0)
    high = [jobfuncs.add.options(priority="high").enqueue(i, i) for i in range(3)]
    assert broker.maintenance.age(["default"], after=5, step=15) == 0  # nobody has waited 5 s yet
    # The low job has waited 10 s (its enqueue time moved back, as a clock would):
    # two periods of 5 s lift it by 2 x 15 to 30, above HIGH (20).
    te = int(broker.client.hget(broker.keys.job(low.id), "te"))
    broker.client.hset(broker.keys.job(low.id), "te", te - 10_000)
    assert broker.maintenance.age(["default"], after=5, step=15) == 1
    assert broker.maintenance.age(["default"], after=5, step=15) == 0  # already at that level
    w = Worker(broker=broker)
    order = [w.claim().id for _ in range(4)]
    assert order == [low.id] + [j.id for j in high]
    assert low.refresh().priority == 0  # the record keeps the job's own priority
    assert_consistent(broker, low.id, "default")


def test_starvation_guard_caps_at_the_top_level_and_keeps_fifo(broker):
    jobs_ = [jobfuncs.add.options(priority=p).enqueue(1, 1) for p in (0, 1000, 5, 1000)]
    for j in jobs_:
        te = int(broker.client.hget(broker.keys.job(j.id), "te"))
        broker.client.hset(broker.keys.job(j.id), "te", te - 3_600_000)
    assert broker.maintenance.age(["default"], after=1, step=1000) == 2
    w = Worker(broker=broker)
    assert [w.claim().id for _ in range(4)] == [j.id for j in jobs_]  # all at 1000: FIFO


def test_a_released_job_that_was_asked_to_cancel_ends_canceled(broker):
    j = jobfuncs.add.enqueue(1, 1)
    w = Worker(broker=broker)
    claimed = w.claim()
    assert j.cancel("stop it")
    assert w.release(claimed)  # a graceful stop gives it back: it must not run again
    assert j.refresh().state is JobState.CANCELED and j.record.cancel_reason == "stop it"
    assert broker.jobs.cancel_requests([j.id]) == {}
    assert_consistent(broker, j.id, "default")


def test_limit_fixes_held_counts_declared_limits_and_failed_parent_results(broker):
    from jobs.limits import publish, set_limit, status

    # Held jobs are counted: queued includes them, and held says how many.
    set_limit(queue="solo", max_concurrency=1, broker=broker)
    q = Queue("solo", broker)
    for i in range(3):
        q.enqueue(jobfuncs.add, i, i)
    w = Worker(["solo"], broker=broker)
    assert w.claim() is not None and w.claim() is None
    counts = q.counts()
    assert (counts["queued"], counts["held"], counts["active"]) == (2, 2, 1)
    # A supervisor publishing "no limit" for a function never removes a set_limit one.
    set_limit(function="tests.jobfuncs:add", max_concurrency=3, broker=broker)
    publish(broker, {"fn:tests.jobfuncs:add": None, "q:solo": None})
    names = {s.name: s.declared for s in status(broker)}
    assert names == {"fn:tests.jobfuncs:add": False, "q:solo": False}
    publish(broker, {"fn:tests.jobfuncs:add": "0 0 5"})
    publish(broker, {"fn:tests.jobfuncs:add": None})
    assert "fn:tests.jobfuncs:add" not in {s.name for s in status(broker)}


def test_failed_parent_passes_none_to_a_dependent_that_runs_anyway(broker):
    parent = jobfuncs.gives_up.enqueue()
    child = jobfuncs.untyped.options(depends_on=[parent], pass_result=True,
                                     on_parent_failure="run").enqueue()
    run_all(broker)
    assert child.result(timeout=1) == [None, 2]
    late = jobfuncs.untyped.options(depends_on=[parent], pass_result=True,
                                    on_parent_failure="run").enqueue()
    run_all(broker)
    assert late.result(timeout=1) == [None, 2]


def test_window_uniqueness_ends_when_the_holding_job_is_gone(broker):
    opts = {"unique_for": 60, "unique_until": "window"}
    a = jobfuncs.add.options(**opts).enqueue(4, 4)
    broker.client.delete(broker.keys.job(a.id))  # its record expired or was purged
    b = jobfuncs.add.options(**opts).enqueue(4, 4)
    assert b.id != a.id and b.refresh().state is JobState.QUEUED
