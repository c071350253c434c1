"""``on_failure`` hooks (in the worker that saw the death, or in a worker after a kill),
the job context's times, attempt and meta, and the per-job log lines."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import ConfigurationError, ErrorKind, Job, JobState, Queue, Worker, job
from jobs.query import job_view
from tests import hookfuncs
from tests.helpers import wait_until
from tests.procs import start_and_wait

MODULES = '["examples.cpu", "tests.jobfuncs", "tests.hookfuncs"]'
ROOT = Path(__file__).parent.parent


@pytest.fixture(autouse=True)
def _no_calls():
    hookfuncs.HOOK_CALLS.clear()
    yield
    hookfuncs.HOOK_CALLS.clear()


def test_on_failure_is_called_once_with_the_exception_after_the_last_attempt(broker):
    j = hookfuncs.fails_twice.enqueue()
    w = Worker(broker=broker)
    assert w.run_until_empty(max_jobs=1) == {"scheduled": 1}
    assert hookfuncs.HOOK_CALLS == []  # a retry follows: not the last attempt
    assert w.run_until_empty() == {"dead": 1}
    (call,) = hookfuncs.HOOK_CALLS
    assert call == {"id": j.id, "attempt": 2, "final": True, "type": "ValueError",
                    "message": "boom", "kind": None, "current": j.id, "pid": call["pid"]}
    assert j.refresh().state is JobState.DEAD and len(j.errors) == 2


def test_a_hook_that_raises_is_logged_and_the_job_stays_dead(broker, caplog):
    j = hookfuncs.fails_for_good.enqueue()
    after = hookfuncs.async_add.enqueue(1, 1)
    with caplog.at_level(logging.ERROR, logger="jobs.hooks"):
        assert Worker(broker=broker).run_until_empty() == {"dead": 1, "completed": 1}
    (call,) = hookfuncs.HOOK_CALLS  # Fail ends the job on its first of three attempts
    assert (call["type"], call["attempt"], call["final"]) == ("Fail", 1, False)
    assert j.refresh().state is JobState.DEAD
    assert (j.error.type, j.error.message) == ("jobs.errors.Fail", "cannot ever work")
    assert after.result(timeout=1) == 2
    assert f"on_failure hook of job {j.id} (tests.hookfuncs:fails_for_good) raised" in caplog.text
    assert "the hook itself failed" in caplog.text


def test_an_async_hook_runs_on_the_loop(broker):
    j = hookfuncs.async_fails.enqueue()
    Worker(broker=broker).run_until_empty()
    (call,) = hookfuncs.HOOK_CALLS
    assert (call["id"], call["type"], call["message"]) == (j.id, "KeyError", "'gone'")


def test_a_resent_death_calls_the_hook_once(broker):
    """The child writes an outcome again when the reply to its first write was lost."""
    j = hookfuncs.fails_twice.options(max_attempts=1).enqueue()
    w = Worker(broker=broker)
    claimed = w.claim()
    assert claimed is not None and claimed.id == j.id
    outcome, policy = w.execute(claimed)
    assert w.finish(claimed, outcome, policy) == "dead"
    assert w.finish(claimed, outcome, policy) == "dead"
    assert [c["id"] for c in hookfuncs.HOOK_CALLS] == [j.id]


def test_on_failure_must_be_callable():
    with pytest.raises(ConfigurationError, match="on_failure must be a function"):
        job(on_failure="tests.hookfuncs:note_failure")  # type: ignore[arg-type]


def test_on_failure_in_the_worker_and_after_a_hard_timeout_kill(sup, tmp_path):
    r = start_and_wait(sup, workers=2, modules=MODULES)
    q = Queue("default", r.broker)
    calls = tmp_path / "calls"
    hooked = q.options(meta={"hook_file": str(calls)})
    failed = hooked.enqueue("tests.hookfuncs:fails_twice")
    wait_until(lambda: failed.refresh().state is JobState.DEAD, timeout=10)
    # The hook opens the file, then writes its line: wait for the whole line.
    wait_until(lambda: calls.exists() and calls.read_text().endswith("\n"), timeout=10,
               what="the hook's line")
    (line,) = [json.loads(x) for x in calls.read_text().splitlines()]
    assert (line["id"], line["attempt"], line["type"], line["message"]) == (
        failed.id, 2, "ValueError", "boom")
    assert line["pid"] in {p.pid for p in r.workers()}  # in the worker, not the supervisor

    calls.unlink()
    killed = hooked.enqueue("tests.hookfuncs:runaway_with_hook")
    wait_until(lambda: killed.refresh().state is JobState.DEAD, timeout=15)
    assert killed.error.kind is ErrorKind.TIMEOUT
    hook_job = Job.fetch(f"{killed.id}.on_failure", r.broker)
    assert hook_job.result(timeout=10) is True
    (line,) = [json.loads(x) for x in calls.read_text().splitlines()]
    assert line == {"id": killed.id, "attempt": 1, "final": True, "type": "JobKilled",
                    "message": "hard timeout after 1 s", "kind": "timeout",
                    "current": killed.id, "pid": line["pid"]}
    assert line["pid"] != r.proc.pid


def test_a_hook_that_hangs_is_killed_at_the_jobs_hard_timeout(sup, tmp_path):
    r = start_and_wait(sup, workers=1, modules=MODULES)
    before = {p.pid for p in r.workers()}
    calls = tmp_path / "calls"
    j = Queue("default", r.broker).options(meta={"hook_file": str(calls)}).enqueue(
        "tests.hookfuncs:fails_into_hanging_hook")
    wait_until(lambda: calls.exists(), timeout=10, what="the hook to start")
    assert j.refresh().state is JobState.DEAD  # written before the hook ran
    wait_until(lambda: {p.pid for p in r.wait_workers(1)} != before, timeout=15,
               what="the hung worker replaced")
    assert j.refresh().state is JobState.DEAD and [e.type for e in j.errors] == ["ValueError"]
    assert Queue("default", r.broker).enqueue("tests.jobfuncs:add", 1, 2).result(timeout=10) == 3


def test_the_context_tells_attempts_times_and_meta(broker):
    before = time.time()
    first = hookfuncs.context_fields.options(meta={"triggered_by": "user:42"}).enqueue()
    retried = hookfuncs.context_fields.enqueue(fail_first=True)
    Worker(broker=broker).run_until_empty()
    a = first.result(timeout=1)
    assert (a["attempt"], a["max_attempts"], a["final"]) == (1, 2, False)
    assert a["meta"] == {"triggered_by": "user:42"} and a["tz"] == "UTC"
    assert before - 1 <= a["enqueued_at"] <= a["started_at"] <= time.time() + 1
    b = retried.result(timeout=1)
    assert (b["attempt"], b["final"], b["meta"]) == (2, True, {})
    # The enqueue (dispatch) time stays; the start is the retry's.
    assert b["enqueued_at"] == pytest.approx(retried.enqueued_at.timestamp(), abs=0.001)
    assert b["started_at"] > retried.errors[0].at - 1 and b["started_at"] >= b["enqueued_at"]


def test_meta_is_shown_by_show_the_view_and_the_handle(broker, server, namespace, tmp_path):
    meta = {"triggered_by": "cron:nightly", "tenant": 7, "tags": ["a", "é"]}
    j = Queue("default", broker).options(meta=meta).enqueue("tests.jobfuncs:add", 1, 2)
    assert j.meta == meta
    assert job_view(j.record, broker)["meta"] == meta
    config = tmp_path / "config.toml"
    config.write_text(f'[redis]\nurl = "{server.url}"\nnamespace = "{namespace}"\n')

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "supervisor", "--config", str(config),
                               *args], capture_output=True, text=True, timeout=30, cwd=ROOT)

    assert json.loads(cli("show", "--json", j.id).stdout)["meta"] == meta
    assert '{"triggered_by": "cron:nightly", "tenant": 7, "tags": ["a", "é"]}' in \
        cli("show", j.id).stdout
    plain = Queue("default", broker).enqueue("tests.jobfuncs:add", 1, 2)
    assert json.loads(cli("show", "--json", plain.id).stdout)["meta"] == {}
    out = cli("enqueue", "tests.jobfuncs:add", "1", "1", "--meta", '{"triggered_by": "ops"}')
    assert out.returncode == 0, out.stderr
    assert Job.fetch(out.stdout.strip(), broker).meta == {"triggered_by": "ops"}
    bad = cli("enqueue", "tests.jobfuncs:add", "1", "1", "--meta", "[1]")
    assert bad.returncode != 0 and "--meta must be a JSON object" in bad.stderr


def test_meta_is_checked_at_enqueue(broker):
    with pytest.raises(ConfigurationError, match="meta must be a dict"):
        hookfuncs.context_fields.options(meta=["x"]).enqueue()
    with pytest.raises(ConfigurationError, match="cannot be stored as JSON"):
        hookfuncs.context_fields.options(meta={"x": object()}).enqueue()


def test_per_job_log_lines_only_when_asked(sup):
    quiet = start_and_wait(sup, workers=1, modules=MODULES)
    q = Queue("default", quiet.broker)
    job_id = q.enqueue("tests.jobfuncs:add", 1, 2)
    assert job_id.result(timeout=10) == 3
    assert quiet.stop() == 0
    assert f"job {job_id.id}" not in quiet.logs()

    loud = start_and_wait(sup, workers=1, modules=MODULES, tail="log_jobs = true")
    q = Queue("default", loud.broker)
    ok = q.enqueue("tests.jobfuncs:add", 1, 2)
    dead = q.enqueue("tests.jobfuncs:key_error")
    retried = q.options(max_attempts=2).enqueue("tests.jobfuncs:slow_retry")
    assert ok.result(timeout=10) == 3
    wait_until(lambda: dead.refresh().state is JobState.DEAD, timeout=10)
    wait_until(lambda: retried.refresh().state is JobState.SCHEDULED, timeout=10)
    assert loud.stop() == 0
    logs = loud.logs()
    assert f"jobs.worker: job {ok.id} tests.jobfuncs:add started (attempt 1)" in logs
    assert f"jobs.worker: job {ok.id} tests.jobfuncs:add completed in 0.0" in logs
    assert f"job {dead.id} tests.jobfuncs:key_error dead in " in logs
    assert "(attempt 1): KeyError: 'missing'" in logs
    assert f"job {retried.id} tests.jobfuncs:slow_retry failed in " in logs
    assert "(attempt 1), retrying in 60 s: OSError: later" in logs
