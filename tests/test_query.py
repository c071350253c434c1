"""The query layer: pages behind a cursor, filters, bulk actions, clear, dead groups."""

import pytest

from jobs import ConfigurationError, Job, JobNotFound, JobState, Queue, Worker
from jobs.events import recent_events
from jobs.limits import set_limit
from jobs.query import (
    JobFilter,
    act_on,
    act_on_matching,
    clear_queue,
    dead_groups,
    list_jobs,
)
from tests import jobfuncs
from tests.helpers import assert_consistent


def run(broker, queues=("default",)):
    return Worker(list(queues), broker=broker).run_until_empty()


def make_dead(broker, count, function="tests.jobfuncs:key_error", queue="default"):
    q = Queue(queue).options(max_attempts=1)
    ids = [j.id for j in q.enqueue_many((function,) for _ in range(count))]
    run(broker, (queue,))
    return ids


def all_pages(broker, queue, state, **kwargs):
    pages, cursor = [], None
    while True:
        page = list_jobs(broker, queue, state, cursor=cursor, **kwargs)
        pages.append(page)
        cursor = page.next
        if cursor is None:
            return pages


def index_order(broker, queue, state, newest_first):
    key = broker.keys.state_index(queue, state)
    raw = broker.client.zrange(key, 0, -1, desc=newest_first)
    return [m.decode() for m in raw]


@pytest.mark.parametrize("newest_first", [True, False])
def test_pages_cover_the_index_once_in_its_order_even_with_shared_scores(broker, newest_first):
    ids = make_dead(broker, 260)
    # Many jobs dead in the same millisecond: give 120 of them one score.
    broker.client.zadd(broker.keys.dead("default"), {i: 1_700_000_000_000 for i in ids[:120]})
    pages = all_pages(broker, "default", "dead", limit=25, newest_first=newest_first)
    listed = [r.id for p in pages for r in p.jobs]
    assert listed == index_order(broker, "default", "dead", newest_first)
    assert len(listed) == 260 and len(set(listed)) == 260
    assert all(len(p.jobs) == 25 for p in pages[:-2])


def test_a_cursor_holds_its_place_while_jobs_leave_and_arrive(broker):
    ids = make_dead(broker, 60)
    first = list_jobs(broker, "default", "dead", limit=20, newest_first=False)
    order = index_order(broker, "default", "dead", newest_first=False)
    assert [r.id for r in first.jobs] == order[:20]
    # Jobs of the first page leave the index; the next page does not shift.
    assert act_on(broker, "default", order[:20], "delete").done == 20
    second = list_jobs(broker, "default", "dead", limit=20, newest_first=False,
                       cursor=first.next)
    assert [r.id for r in second.jobs] == order[20:40]
    assert set(ids) == set(order)


def test_filters_narrow_by_function_error_text_and_age(broker):
    key_errors = make_dead(broker, 5)
    value_errors = make_dead(broker, 3, "tests.jobfuncs:raises_bad_str")
    marked = Queue("default").options(max_attempts=1).enqueue(jobfuncs.spin_then_fail,
                                                              0.0).id
    run(broker)

    def listed(**where):
        return {r.id for r in list_jobs(broker, "default", "dead", where=JobFilter(**where),
                                        limit=100).jobs}

    assert listed(function="tests.jobfuncs:key_error") == set(key_errors)
    assert listed(error_type="KeyError") == set(key_errors)
    assert listed(error_type="exception") == {*key_errors, *value_errors, marked}
    assert listed(text="AFTER SPINNING") == {marked}  # the error message, any case
    assert listed(text=key_errors[0][:12]) == {key_errors[0]}  # an id
    assert listed(older_than=3600) == set() and len(listed(newer_than=3600)) == 9
    with pytest.raises(ConfigurationError, match="older_than"):
        JobFilter(older_than=-1)


def test_arguments_are_searchable(broker):
    wanted = Queue("default").enqueue(jobfuncs.add, 40, 2).id
    Queue("default").enqueue(jobfuncs.add, 1, 2)
    page = list_jobs(broker, "default", "queued", where=JobFilter(text="[40,2]"))
    assert [r.id for r in page.jobs] == [wanted]


def test_a_sparse_filter_stops_at_its_scan_budget_and_goes_on_from_there(broker):
    make_dead(broker, 300)
    rare = make_dead(broker, 2, "tests.jobfuncs:raises_bad_str")
    where = JobFilter(function="tests.jobfuncs:raises_bad_str")
    page = list_jobs(broker, "default", "dead", where=where, newest_first=False, scan=100)
    assert page.jobs == [] and not page.exhausted and 100 <= page.scanned < 200
    found = []
    cursor = page.next
    while cursor:
        page = list_jobs(broker, "default", "dead", where=where, newest_first=False,
                         scan=100, cursor=cursor)
        found += [r.id for r in page.jobs]
        cursor = page.next
    # In index order: two jobs dead in the same millisecond are ordered by id.
    assert found == [i for i in index_order(broker, "default", "dead", False) if i in rare]


def test_act_on_all_matching_touches_exactly_the_matching_jobs(broker):
    key_errors = make_dead(broker, 7)
    others = make_dead(broker, 4, "tests.jobfuncs:raises_bad_str")
    outcome = act_on_matching(broker, "default", "dead", "requeue",
                              where=JobFilter(error_type="KeyError"), who="alice")
    assert (outcome.done, outcome.skipped) == (7, 0)
    for i in key_errors:
        assert assert_consistent(broker, i, "default") == "queued"
        assert Job.fetch(i).attempts == 0
    assert {r.id for r in Queue("default").dead(limit=None)} == set(others)
    audit = [e for e in recent_events(broker, 20) if e.get("e") == "action"]
    assert audit[-1]["who"] == "alice" and audit[-1]["count"] == "7"
    assert audit[-1]["action"] == "requeue" and audit[-1]["q"] == "default"


def test_act_on_chosen_jobs_skips_what_the_action_does_not_apply_to(broker):
    dead = make_dead(broker, 2)
    done = Queue("default").enqueue(jobfuncs.add, 1, 1).id
    run(broker)
    elsewhere = make_dead(broker, 1, queue="other")[0]
    outcome = act_on(broker, "default", [*dead, done, elsewhere, "nosuchjob"], "requeue")
    assert (outcome.done, outcome.skipped) == (2, 3)
    assert Job.fetch(done).state is JobState.COMPLETED
    assert Job.fetch(elsewhere).state is JobState.DEAD
    with pytest.raises(ConfigurationError, match="requeue, cancel, delete"):
        act_on(broker, "default", dead, "explode")


def test_requeue_takes_a_canceled_job_back(broker):
    job = Queue("default").options(delay=600).enqueue(jobfuncs.add, 1, 2)
    assert job.cancel("changed my mind")
    assert act_on(broker, "default", [job.id], "requeue").done == 1
    assert assert_consistent(broker, job.id, "default") == "queued"
    assert job.refresh().record.cancel_reason is None
    run(broker)
    assert job.result(timeout=5) == 3


def test_delete_removes_final_and_pending_jobs_and_leaves_running_ones(broker):
    final = make_dead(broker, 1)[0]
    broker.jobs.append_log(final, "a line", 10)
    pending = Queue("default").options(delay=600).enqueue(jobfuncs.add, 1, 2).id
    running = Queue("default").enqueue(jobfuncs.add, 2, 2)
    claimed = Worker(["default"], broker=broker).claim()
    assert claimed.id == running.id
    outcome = act_on(broker, "default", [final, pending, running.id], "delete")
    assert (outcome.done, outcome.skipped) == (2, 1)
    for gone in (final, pending):
        with pytest.raises(JobNotFound):
            Job.fetch(gone)
    assert broker.jobs.job_log(final) == []
    assert running.refresh().state is JobState.ACTIVE
    for state in ("dead", "canceled", "scheduled"):
        assert broker.client.zcard(broker.keys.state_index("default", state)) == 0


def test_clear_cancels_every_queued_job_and_nothing_else(broker):
    q = Queue("bulk")
    queued = [j.id for j in q.enqueue_many((jobfuncs.add, i, 1) for i in range(1200))]
    later = q.options(delay=600).enqueue(jobfuncs.add, 0, 0)
    outcome = clear_queue(broker, "bulk", who="bob")
    assert outcome.done == 1200
    assert q.counts()["queued"] == 0 and q.counts()["canceled"] == 1200
    assert later.refresh().state is JobState.SCHEDULED
    assert Job.fetch(queued[0]).record.cancel_reason == "queue cleared by bob"


def held_and_queued(broker, queue="side"):
    """Under a concurrency limit of 1: one job running, three held back by the limit
    (in its held set), then two more in the queue's index; their ids in that order."""
    set_limit(queue=queue, max_concurrency=1, broker=broker)
    q = Queue(queue, broker)
    w = Worker([queue], broker=broker)
    running = q.enqueue(jobfuncs.add, 0, 0)
    assert w.claim().id == running.id
    held = [j.id for j in q.enqueue_many((jobfuncs.add, i, 1) for i in range(3))]
    assert w.claim() is None  # the limit parks all three
    later = [j.id for j in q.enqueue_many((jobfuncs.add, i, 2) for i in range(2))]
    assert broker.jobs.held(queue) == 3 and q.counts()["queued"] == 5
    return running.id, held, later


@pytest.mark.parametrize("newest_first", [False, True])
def test_queued_jobs_a_limit_holds_back_are_listed_after_the_others(broker, newest_first):
    _, held, later = held_and_queued(broker)
    pages = all_pages(broker, "side", "queued", limit=2, newest_first=newest_first)
    listed = [r.id for p in pages for r in p.jobs]
    expected = later + held  # run order: the index, then the held set, each in its order
    assert listed == (expected[::-1] if newest_first else expected)
    assert [len(p.jobs) for p in pages] == [2, 2, 1]
    shown = {r.id: r for p in pages for r in p.jobs}
    assert {shown[i].held_by for i in held} == {"q:side"}
    assert {shown[i].held_by for i in later} == {None}
    assert {r.state for r in shown.values()} == {JobState.QUEUED}


def test_clear_cancels_the_jobs_a_limit_holds_back_too(broker):
    running, held, later = held_and_queued(broker)
    outcome = clear_queue(broker, "side", who="bob")
    assert (outcome.done, outcome.skipped) == (5, 0)
    counts = Queue("side", broker).counts()
    assert (counts["queued"], counts["held"], counts["canceled"]) == (0, 0, 5)
    assert broker.client.zcard(broker.keys.limit_held("q:side")) == 0
    for i in held + later:
        assert assert_consistent(broker, i, "side") == "canceled"
    assert Job.fetch(running).state is JobState.ACTIVE
    assert list_jobs(broker, "side", "queued").jobs == []


def test_a_function_limit_holds_jobs_of_several_queues_each_listed_on_its_own(broker):
    set_limit(function="tests.jobfuncs:add", max_concurrency=1, broker=broker)
    w = Worker(["side", "other"], broker=broker)
    running = Queue("side", broker).enqueue(jobfuncs.add, 0, 0)
    assert w.claim().id == running.id
    mine = Queue("side", broker).enqueue(jobfuncs.add, 1, 1).id
    theirs = Queue("other", broker).enqueue(jobfuncs.add, 2, 2).id
    assert w.claim() is None
    listed = list_jobs(broker, "side", "queued").jobs
    assert [(r.id, r.held_by) for r in listed] == [(mine, "fn:tests.jobfuncs:add")]
    assert clear_queue(broker, "side").done == 1
    assert Job.fetch(mine).state is JobState.CANCELED
    assert Job.fetch(theirs).state is JobState.QUEUED
    assert [r.id for r in list_jobs(broker, "other", "queued").jobs] == [theirs]


def test_dead_groups_count_by_function_and_error_type(broker):
    make_dead(broker, 5)
    make_dead(broker, 2, "tests.jobfuncs:raises_bad_str")
    found = dead_groups(broker, "default")
    assert found.complete and found.scanned == 7
    assert [(g.function, g.error_type, g.count) for g in found.groups] == [
        ("tests.jobfuncs:key_error", "KeyError", 5),
        ("tests.jobfuncs:raises_bad_str", "tests.jobfuncs.BadStr", 2)]
    partial = dead_groups(broker, "default", scan=1000)
    assert partial.complete
    newest = dead_groups(broker, "default", scan=3)  # the two BadStr ones died last
    assert (newest.scanned, newest.complete) == (3, False)
    assert [(g.error_type, g.count) for g in newest.groups] == [
        ("tests.jobfuncs.BadStr", 2), ("KeyError", 1)]
    with pytest.raises(ConfigurationError, match="scan must be 1 to 1,000,000"):
        dead_groups(broker, "default", scan=0)
    # A group is acted on through the filter it stands for.
    group = found.groups[1]
    outcome = act_on_matching(broker, "default", "dead", "delete", where=JobFilter(
        function=group.function, error_type=group.error_type))
    assert outcome.done == 2 and Queue("default").counts()["dead"] == 5


def test_bad_queries_say_what_was_wrong(broker):
    with pytest.raises(ConfigurationError, match="cursor 'nope' is not one"):
        list_jobs(broker, "default", "dead", cursor="nope")
    with pytest.raises(ConfigurationError, match="state 'lost' is not one of"):
        list_jobs(broker, "default", "lost")
    with pytest.raises(ConfigurationError, match="limit must be 1 to 500"):
        list_jobs(broker, "default", "dead", limit=0)
    with pytest.raises(ConfigurationError, match="queue"):
        list_jobs(broker, "bad queue!", "dead")


def test_a_copy_is_a_new_job_with_the_same_call(broker):
    from jobs.query.bulk import copy_job

    original = Queue("other").options(priority=20, max_attempts=7, timeout=12.5,
                                      meta={"by": "dave"}).enqueue(jobfuncs.add, 4, 5)
    copied = Job.fetch(copy_job(broker, original.id, who="carol"))
    assert copied.record.spec.max_attempts == 7 and copied.record.spec.timeout == 12.5
    assert copied.meta == {"by": "dave"}
    assert copied.id != original.id
    assert (copied.function, copied.queue, copied.priority) == ("tests.jobfuncs:add", "other", 20)
    assert copied.record.spec.args == [4, 5]
    audit = [e for e in recent_events(broker, 20) if e.get("e") == "action"]
    assert audit[-1]["action"] == "copy" and audit[-1]["who"] == "carol"
    with pytest.raises(JobNotFound):
        copy_job(broker, "nosuchjob")
