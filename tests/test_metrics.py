"""Counts by function, the enqueued counters and the bound on function labels, in Redis
and through a real supervisor's /metrics; the per-function figures of `jobvisor stats`."""

from __future__ import annotations

import json

import pytest

from jobs import JobState, Queue, Worker
from tests import jobfuncs  # noqa: F401  (registers the functions the worker here runs)
from tests.helpers import wait_until
from tests.procs import start_and_wait
from tests.test_cli import cli
from tests.test_worker_health import metrics_port, scrape


def totals(broker) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in broker.client.hgetall(broker.keys.totals()).items()}


def test_enqueues_count_the_jobs_they_create_by_queue_and_function(broker):
    q = Queue("default", broker)
    q.enqueue("tests.jobfuncs:add", 1, 2)
    q.enqueue_many([("tests.jobfuncs:add", i, i) for i in range(3)]
                   + [("examples.cpu:noop",), ("tests.jobfuncs:add", 9, 9)])
    Queue("other", broker).options(delay=60).enqueue("examples.cpu:noop")
    # A second enqueue of a job id, or of a unique job, creates nothing and counts nothing.
    q.options(job_id="fixed").enqueue("examples.cpu:noop")
    q.options(job_id="fixed").enqueue("examples.cpu:noop")
    q.options(unique_for=60).enqueue("tests.jobfuncs:add", 5, 5)
    q.options(unique_for=60).enqueue("tests.jobfuncs:add", 5, 5)
    counted = {k.decode(): int(v)
               for k, v in broker.client.hgetall(broker.keys.enqueued()).items()}
    assert counted == {"default|tests.jobfuncs:add": 6, "default|examples.cpu:noop": 2,
                       "other|examples.cpu:noop": 1}


def test_outcomes_and_run_times_are_counted_by_function(broker):
    q = Queue("default", broker)
    q.enqueue("tests.jobfuncs:add", 1, 2)
    q.enqueue("tests.jobfuncs:gives_up")
    Worker(broker=broker).run_until_empty()
    t = totals(broker)
    assert t["fn|tests.jobfuncs:add|completed"] == 1 and t["fn|tests.jobfuncs:gives_up|dead"] == 1
    for fn in ("tests.jobfuncs:add", "tests.jobfuncs:gives_up"):
        assert sum(n for k, n in t.items() if k.startswith(f"fn|{fn}|d|")) == 1
        assert f"fn|{fn}|dsum" in t


def test_the_supervisor_s_metrics_label_functions_within_the_bound(sup):
    port = metrics_port()
    r = start_and_wait(sup, tail=f'[metrics]\naddress = "127.0.0.1:{port}"\nmax_functions = 1')
    q = Queue("default", r.broker)
    q.enqueue("tests.jobfuncs:add", 1, 2).result(timeout=10)
    add = ("function", "tests.jobfuncs:add")
    # tests.jobfuncs:add is the one function seen so far: labelled. Its completion is
    # counted in Redis as its worker goes idle, just after the result is written.
    wait_until(lambda: scrape(port).get(
        ("jobvisor_function_jobs_total", (add, ("outcome", "completed")))) == 1,
        timeout=10, what="the add job's count under its own name")
    dead = q.enqueue("tests.jobfuncs:gives_up")
    q.enqueue("examples.cpu:spin", 0.2).result(timeout=10)
    wait_until(lambda: dead.refresh().state is JobState.DEAD, timeout=10)
    # Completions reach Redis when their worker goes idle (within a second).
    s = wait_until(lambda: (m := scrape(port)) and m.get(
        ("jobvisor_function_jobs_total", (("function", "other"), ("outcome", "completed")))) == 1
        and m, timeout=10, what="the spin job's count under other")
    other = ("function", "other")
    assert s[("jobvisor_function_jobs_total", (add, ("outcome", "completed")))] == 1
    assert s[("jobvisor_function_jobs_total", (other, ("outcome", "dead")))] == 1
    assert s[("jobvisor_function_jobs_enqueued_total", (add,))] == 1
    assert s[("jobvisor_function_jobs_enqueued_total", (other,))] == 2
    assert s[("jobvisor_jobs_enqueued_total", (("queue", "default"),))] == 3
    assert s[("jobvisor_function_job_duration_seconds_count", (add,))] == 1
    assert s[("jobvisor_function_job_duration_seconds_count", (other,))] == 2
    assert s[("jobvisor_function_job_duration_seconds_sum", (other,))] >= 0.2
    assert s[("jobvisor_function_job_duration_seconds_bucket", (other, ("le", "+Inf")))] == 2
    assert not any(dict(labels).get("function") in ("tests.jobfuncs:gives_up",
                                                     "examples.cpu:spin") for _, labels in s)


@pytest.fixture
def r(sup):
    return start_and_wait(sup, workers=1)


def test_stats_give_each_function_s_average_run_time(r):
    q = Queue("default", r.broker)
    for seconds in (0.2, 0.4):
        q.enqueue("examples.cpu:spin", seconds).result(timeout=10)
    q.enqueue("tests.jobfuncs:gives_up")
    rows = wait_until(lambda: (rows := {x["function"]: x for x in json.loads(
        cli(r, "stats", "--functions", "--json").stdout)}) and rows.get(
        "examples.cpu:spin", {}).get("last_hour", {}).get("completed") == 2
        and "tests.jobfuncs:gives_up" in rows and rows, timeout=10)
    spin = rows["examples.cpu:spin"]
    assert 0.29 <= spin["avg_seconds"] < 0.6 and spin["last_minute"]["completed"] == 2
    assert rows["tests.jobfuncs:gives_up"]["last_hour"]["dead"] == 1
    text = cli(r, "stats").stdout
    assert "QUEUE" in text and "AVG TIME/1H" in text and "examples.cpu:spin" in text
    assert "AVG TIME/1H" in cli(r, "stats", "--functions").stdout
    # --json without --functions is the list of queues it always was.
    queues = json.loads(cli(r, "stats", "--json").stdout)
    assert isinstance(queues, list) and [x["queue"] for x in queues] == ["default"]
