"""Per-enqueue retry policies, running a job inline instead of queueing it, listing the
registered functions, and the configured default queue."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

import jobs
from jobs import (
    Backoff,
    Broker,
    ConfigurationError,
    ErrorKind,
    Job,
    JobDefaults,
    JobFailed,
    JobNotFound,
    JobState,
    Queue,
    RedisSettings,
    UnknownFunction,
    Worker,
    enqueue_many,
)
from jobs.effective import describe, publish_functions
from jobs.inline import InlineJob
from jobs.policy import matches
from jobs.query import job_view
from tests import jobfuncs
from tests.helpers import wait_until
from tests.procs import start_and_wait

ROOT = Path(__file__).parent.parent
NOW = Backoff(kind="fixed", base=0.0, jitter=0.0)


def run(broker: Broker, queues: tuple[str, ...] = ("default",)) -> dict[str, int]:
    return dict(Worker(list(queues), broker=broker).run_until_empty())


def write_config(tmp_path: Path, server, namespace: str, body: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[redis]\nurl = "{server.url}"\nnamespace = "{namespace}"\n\n'
                    f'[worker]\nmodules = ["tests.jobfuncs"]\n{body}')
    return path


def cli(config: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


# -- retry policy per enqueue ------------------------------------------------------------

def test_an_enqueue_retry_policy_overrides_the_functions(broker):
    """@job(max_attempts=5, fixed 60 s backoff) enqueued with max_attempts=2 and a fixed
    0 s backoff: two attempts back to back, then dead; enqueued plainly, a minute's wait."""
    mine = jobfuncs.flaky.options(max_attempts=2, backoff=NOW).enqueue("flaky")
    theirs = jobfuncs.flaky.enqueue("flaky")
    assert run(broker) == {"scheduled": 2, "dead": 1}
    mine.refresh()
    assert (mine.state, mine.attempts) == (JobState.DEAD, 2)
    assert [e.type for e in mine.errors] == ["tests.jobfuncs.FlakyError"] * 2
    theirs.refresh()
    assert (theirs.state, theirs.attempts) == (JobState.SCHEDULED, 1)
    assert theirs.record.due_at - theirs.errors[0].at == pytest.approx(60, abs=2)

    # What every surface shows: the job's own options, else the function's as published.
    name = jobfuncs.flaky.name
    publish_functions(broker, {name: describe(jobfuncs.flaky, broker.defaults)})
    shown = job_view(mine.record, broker)
    assert (shown["max_attempts"], shown["backoff"]["kind"], shown["backoff"]["base"]) == (
        2, "fixed", 0.0)
    assert shown["retry_on"] == ["ConnectionError"]  # the function's: the enqueue set none
    plain = job_view(theirs.record, broker)
    assert (plain["max_attempts"], plain["backoff"]["base"]) == (5, 60.0)


def test_show_prints_a_jobs_effective_retry_policy(tmp_path, server, namespace, broker):
    j = jobfuncs.flaky.options(max_attempts=2, backoff=NOW, retry_on=["ValueError"]).enqueue(
        "value")
    out = cli(write_config(tmp_path, server, namespace), "show", j.id)
    assert out.returncode == 0, out.stderr
    assert "attempts      0 of 2\nbackoff       fixed 0s (cap 3600s, jitter 0%)\n" \
           "retry_on      ValueError\n" in out.stdout
    shown = json.loads(cli(write_config(tmp_path, server, namespace), "show", j.id,
                           "--json").stdout)
    assert (shown["max_attempts"], shown["backoff"]["base"], shown["retry_on"]) == (
        2, 0.0, ["ValueError"])


@pytest.mark.parametrize(("kind", "options", "attempts"), [
    ("value", {"retry_on": ["ValueError"]}, 5),  # the enqueue's list replaces the function's
    ("flaky", {"retry_on": ["ValueError"]}, 1),  # ... so a connection error is no longer retried
    ("value", {"retry_on": [ValueError]}, 5),  # a class is stored by its name
    ("flaky", {"retry_on": ["ConnectionError"], "max_attempts": 3}, 3),  # a base class's name
    ("flaky", {"dont_retry_on": ["tests.jobfuncs.FlakyError"]}, 1),  # module.Class
    ("flaky", {"dont_retry_on": ["elsewhere.FlakyError"], "max_attempts": 2}, 2),  # not it
    ("value", {"retry_on": [], "max_attempts": 2}, 2),  # [] clears the function's list
    ("value", {}, 1),  # the function's own rule: connection errors only
])
def test_retry_on_per_enqueue_by_exception_name(broker, kind, options, attempts):
    j = jobfuncs.flaky.options(backoff=NOW, **options).enqueue(kind)
    run(broker)
    j.refresh()
    assert (j.state, j.attempts) == (JobState.DEAD, attempts)


def test_retry_rules_match_by_name_qualified_name_or_base_class():
    exc = jobfuncs.FlakyError("x")
    for rule in ("FlakyError", "tests.jobfuncs.FlakyError", "ConnectionError",
                 "builtins.ConnectionError", "OSError", "Exception", ConnectionError):
        assert matches(exc, (rule,)), rule
    for rule in ("ValueError", "other.FlakyError", "Flaky", "jobfuncs.FlakyError", KeyError):
        assert not matches(exc, (rule,)), rule


@pytest.mark.parametrize(("options", "message"), [
    ({"retry_on": "ValueError"}, "retry_on must be a list"),
    ({"dont_retry_on": [42]}, "dont_retry_on takes exception classes or names"),
    ({"retry_on": ["not a name"]}, "retry_on takes exception classes or names"),
    ({"backoff": {"type": "fixed", "delay": 1000}}, "unknown field `type`"),
    ({"backoff": {"kind": "fixed", "base": -1}}, "Expected `float` >= 0.0 - at `$.base`"),
    ({"backoff": "fixed"}, "backoff must be a Backoff or a mapping"),
])
def test_bad_retry_options_are_refused_before_anything_is_written(broker, options, message):
    with pytest.raises(ConfigurationError) as err:
        jobfuncs.flaky.options(**options).enqueue("value")
    assert message in str(err.value)
    assert broker.client.keys(f"{broker.keys.ns}:*") == []


def test_a_killed_job_is_retried_by_its_enqueue_policy(sup):
    """The supervisor's path: hard-timeout kills are retried with the enqueue's backoff
    and max_attempts (the function's 60 s backoff would leave it scheduled)."""
    r = start_and_wait(sup, workers=1)
    j = Queue("default", r.broker).options(timeout=0.3, max_attempts=2, backoff=NOW).enqueue(
        jobfuncs.flaky, "ok", 30.0)
    wait_until(lambda: j.refresh().state is JobState.DEAD, timeout=30, what="two kills")
    assert [(e.kind, e.type) for e in j.errors] == [(ErrorKind.TIMEOUT, "HardTimeout")] * 2


# -- inline runs -------------------------------------------------------------------------

def test_inline_runs_here_and_writes_nothing(broker):
    j = jobfuncs.add.options(inline=True).enqueue(2, 40)
    assert isinstance(j, InlineJob) and isinstance(j, Job)
    assert (j.state, j.attempts, j.result(), j.function) == (
        JobState.COMPLETED, 1, 42, "tests.jobfuncs:add")
    assert j.started_at <= j.finished_at and j.cancel() is False
    by_name = Queue().options(inline=True).enqueue("tests.jobfuncs:norm", {"x": 3, "y": 4})
    assert by_name.result() == 25  # the argument converted to a Point, as a worker would
    progress = jobfuncs.reports_progress.options(inline=True).enqueue(3)
    assert progress.progress == {"done": 3, "total": 3, "message": "step 3"}
    assert broker.client.keys(f"{broker.keys.ns}:*") == []
    with pytest.raises(JobNotFound):
        Job.fetch(j.id, broker)


def test_inline_needs_no_server():
    nowhere = Broker("unix:///nonexistent/jobvisor.sock",
                     redis_settings=RedisSettings(namespace="inline"), defaults=JobDefaults())
    assert Queue(broker=nowhere).options(inline=True).enqueue(jobfuncs.add, 1, 2).result() == 3


def test_an_inline_failure_is_one_attempt_and_dead(broker):
    j = jobfuncs.flaky.options(inline=True).enqueue("flaky")  # its policy would retry it
    assert (j.state, j.attempts, j.error.type) == (
        JobState.DEAD, 1, "tests.jobfuncs.FlakyError")
    with pytest.raises(JobFailed, match="FlakyError: try again"):
        j.result()
    bad = jobfuncs.add.options(inline=True).enqueue("two", 2)
    assert (bad.state, bad.error.kind, bad.error.type) == (
        JobState.DEAD, ErrorKind.INVALID, "ValidationError")


def test_should_queue_decides_per_call(broker):
    jobfuncs.CALLS.clear()
    small = jobfuncs.sized.enqueue(5)
    assert isinstance(small, InlineJob) and small.result() == 10
    assert jobfuncs.CALLS == [("sized", 5)]  # ran at once, in this process
    large = jobfuncs.sized.enqueue(500)
    forced = jobfuncs.sized.options(inline=False).enqueue(5)
    later = jobfuncs.sized.options(delay=60).enqueue(5)  # a delay needs the queue
    assert [j.refresh().state for j in (large, forced, later)] == [
        JobState.QUEUED, JobState.QUEUED, JobState.SCHEDULED]
    assert jobfuncs.CALLS == [("sized", 5)]
    assert run(broker) == {"completed": 2}
    assert large.result(timeout=1) == 1000


def test_a_functions_own_uniqueness_does_not_stop_an_inline_run(broker):
    first = jobfuncs.unique_report.options(inline=True).enqueue("monday")
    again = jobfuncs.unique_report.options(inline=True).enqueue("monday")
    assert (first.result(), again.result()) == ("monday", "monday") and first.id != again.id
    assert broker.client.keys(f"{broker.keys.ns}:*") == []


def test_inline_refusals(broker):
    with pytest.raises(ConfigurationError, match="delay need the queue"):
        jobfuncs.add.options(inline=True, delay=5).enqueue(1, 2)
    with pytest.raises(ConfigurationError, match="unique_for need the queue"):
        jobfuncs.unique_report.options(inline=True, unique_for=5).enqueue("monday")
    with pytest.raises(ConfigurationError, match="inline=True runs one call at once"):
        enqueue_many([jobfuncs.add.options(inline=True).call(1, 2)])
    with pytest.raises(UnknownFunction, match="needs the function registered in this"):
        Queue().options(inline=True).enqueue("nowhere.tasks:f")
    with pytest.raises(ConfigurationError, match="should_queue must be a callable"):
        jobs.job(should_queue=True)  # type: ignore[arg-type]
    assert broker.client.keys(f"{broker.keys.ns}:*") == []


def test_cli_enqueue_inline(tmp_path):
    # No server at this URL: an inline run does not need one.
    path = tmp_path / "config.toml"
    path.write_text('[redis]\nurl = "unix:///nonexistent/jobvisor.sock"\n\n'
                    '[worker]\nmodules = ["tests.jobfuncs"]\n')
    done = cli(path, "enqueue", "tests.jobfuncs:add", "2", "40", "--inline")
    assert (done.returncode, done.stdout.strip()) == (0, "42"), done.stderr
    failed = cli(path, "enqueue", "tests.jobfuncs:flaky", '"value"', "--inline")
    assert failed.returncode == 10
    assert "tests.jobfuncs:flaky ran inline and failed: ValueError: bad input" in failed.stderr
    view = json.loads(cli(path, "enqueue", "tests.jobfuncs:add", "1", "1", "--inline",
                          "--json").stdout)
    assert (view["state"], view["result"], view["max_attempts"]) == ("completed", 2, 3)


# -- jobvisor functions ------------------------------------------------------------------

def test_functions_lists_each_registered_function_with_its_options(tmp_path, server, namespace):
    path = write_config(tmp_path, server, namespace, "\n[defaults]\ntimeout = 120.0\n")
    out = cli(path, "functions", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    flaky = rows["tests.jobfuncs:flaky"]
    assert (flaky["queue"], flaky["priority"], flaky["timeout"], flaky["max_attempts"]) == (
        "default", 10, 120.0, 5)
    assert flaky["backoff"] == {"kind": "fixed", "base": 60.0, "factor": 2.0, "cap": 3600.0,
                                "jitter": 0.0}
    assert flaky["retry_on"] == ["ConnectionError"]
    assert rows["tests.jobfuncs:shout"]["queue"] == "other"
    assert rows["tests.jobfuncs:shout"]["priority"] == 20
    assert rows["tests.jobfuncs:rate_limited"]["rate_limit"] == "5/1s"
    assert rows["tests.jobfuncs:capped"]["max_concurrency"] == 2
    assert rows["tests.jobfuncs:unique_report"]["unique_for"] == 60.0
    assert rows["tests.jobfuncs:dies_with_hook"]["on_dead"] == "tests.jobfuncs:on_dead_hook"
    assert rows["tests.jobfuncs:sized"]["should_queue"] == "tests.jobfuncs.big_enough_to_queue"
    assert rows["tests.jobfuncs:soft_limited"]["soft_timeout"] == 0.5
    text = cli(path, "functions").stdout
    assert ("tests.jobfuncs:flaky\n  queue         default (priority 10)\n"
            "  timeout       120s (soft -)\n  max_attempts  5\n"
            "  backoff       fixed 60s (cap 3600s, jitter 0%)\n"
            "  retry_on      ConnectionError\n") in text


def test_functions_reports_an_import_error_and_exits_non_zero(tmp_path, server, namespace):
    path = tmp_path / "config.toml"
    path.write_text('[worker]\nmodules = ["tests.jobfuncs", "tests.no_such_module"]\n')
    out = cli(path, "functions")
    assert out.returncode == 3 and out.stdout == ""
    assert "cannot import job module 'tests.no_such_module'" in out.stderr
    assert "searched [worker].path" in out.stderr


# -- the default queue -------------------------------------------------------------------

def test_the_default_queue_of_the_settings(server, namespace):
    b = jobs.connect(server.url, redis_settings=RedisSettings(namespace=namespace),
                     defaults=JobDefaults(queue="work"))
    try:
        plain = jobfuncs.add.enqueue(1, 2)  # @job without queue=
        named = Queue().enqueue("tests.jobfuncs:add", 3, 4)
        own = jobfuncs.shout.enqueue("x")  # @job(queue="other") keeps its queue
        assert (plain.queue, named.queue, own.queue, Queue().name) == (
            "work", "work", "other", "work")
        assert Worker(broker=b).queues == ["work"]
        assert run(b, ("work",)) == {"completed": 2}
    finally:
        b.client.delete(*b.client.keys(f"{namespace}:*"))


def test_producers_take_the_default_queue_from_jobvisor_config(tmp_path, server, namespace,
                                                               monkeypatch):
    path = write_config(tmp_path, server, namespace, '\n[defaults]\ndefault_queue = "work"\n')
    monkeypatch.setenv("JOBVISOR_CONFIG", str(path))
    b = Broker()  # what a producer script gets with no arguments
    try:
        assert b.defaults.queue == "work"
        assert Queue(broker=b).enqueue(jobfuncs.add, 1, 2).queue == "work"
        shown = cli(path, "enqueue", "tests.jobfuncs:add", "5", "6")  # no --queue
        assert shown.returncode == 0, shown.stderr
        assert Job.fetch(shown.stdout.strip(), b).queue == "work"
    finally:
        b.client.delete(*b.client.keys(f"{namespace}:*"))


def test_default_queue_config_keys(tmp_path):
    from supervisor.config import load_config
    from supervisor.errors import ConfigError

    def load(body: str):  # type: ignore[no-untyped-def]
        path = tmp_path / "c.toml"
        path.write_text(body)
        return load_config(path)

    config = load('[defaults]\nqueue = "work"\n')
    assert (config.defaults.queue, config.worker.queues) == ("work", ["work"])
    alias = load('[defaults]\ndefault_queue = "work"\n')
    assert (alias.defaults.queue, alias.worker.queues) == ("work", ["work"])
    kept = load('[defaults]\nqueue = "work"\n[worker]\nqueues = ["a", "b"]\n')
    assert kept.worker.queues == ["a", "b"]
    assert load("").worker.queues == ["default"]
    for body, message in (
            ('[defaults]\nqueue = "work"\ndefault_queue = "jobs"\n',
             "defaults.queue ('work') and defaults.default_queue ('jobs') are two names"),
            ('[defaults]\nqueue = "two words"\n', "at `$.defaults.queue`"),
            ('[scheduler]\ntimezone = "Mars/Olympus"\n', "unknown time zone 'Mars/Olympus'"),
            ('[scheduler]\nenabled = "yes"\n', "at `$.scheduler.enabled`")):
        with pytest.raises(ConfigError) as err:
            load(body)
        assert message in str(err.value), str(err.value)


# -- [scheduler] -------------------------------------------------------------------------

def test_schedules_take_the_configured_zone_and_queue_where_defined(tmp_path):
    from jobs.schedules import next_ticks
    from supervisor.config import load_config

    path = tmp_path / "c.toml"
    path.write_text("""
[defaults]
queue = "work"

[scheduler]
timezone = "Europe/Berlin"

[[schedules]]
name = "plain"
cron = "0 3 * * *"
job = "tests.jobfuncs:add"

[[schedules]]
name = "own"
cron = "0 3 * * *"
job = "tests.jobfuncs:add"
timezone = "UTC"
queue = "cron"
""")
    plain, own = load_config(path).schedules
    assert (plain.timezone, plain.queue, own.timezone, own.queue) == (
        "Europe/Berlin", "work", "UTC", "cron")
    midnight = datetime(2026, 7, 1, tzinfo=UTC).timestamp()
    assert datetime.fromtimestamp(next_ticks(plain, midnight)[0], UTC).hour == 1  # 03:00 CEST
    assert datetime.fromtimestamp(next_ticks(own, midnight)[0], UTC).hour == 3


def test_api_schedules_are_stored_with_the_zone_of_the_producers_settings(broker, monkeypatch):
    from jobs import Schedule, schedules

    monkeypatch.delenv("JOBVISOR_CONFIG", raising=False)
    monkeypatch.setenv("JOBVISOR_SCHEDULER_TIMEZONE", "Asia/Tokyo")
    schedules.add(Schedule(name="n", cron="0 3 * * *", job="tests.jobfuncs:add"), broker)
    schedules.add(Schedule(name="m", cron="0 3 * * *", job="tests.jobfuncs:add",
                           timezone="UTC", queue="cron"), broker)
    stored = {s.name: (s.timezone, s.queue) for s in schedules.list_schedules(broker)}
    assert stored == {"n": ("Asia/Tokyo", "default"), "m": ("UTC", "cron")}


EVERY_SECOND = """
[scheduler]
enabled = {enabled}

[[schedules]]
name = "tick"
cron = "* * * * * *"
job = "tests.jobfuncs:add"
args = [1, 1]
"""


def test_the_scheduler_switch_turns_firing_off_and_on_by_reload(sup):
    from jobs.schedules import ScheduleKeys

    r = start_and_wait(sup, workers=1, tail=EVERY_SECOND.format(enabled="false"))
    assert Queue("default", r.broker).enqueue(jobfuncs.add, 2, 2).result(timeout=20) == 4
    wait_until(lambda: "cron: off ([scheduler] enabled = false)" in r.logs(), timeout=10)
    state = ScheduleKeys(r.broker).state("tick")
    assert not r.broker.client.exists(state)  # never looked at: no baseline written
    r.config.write_text(r.text.replace("enabled = false", "enabled = true"))
    r.proc.send_signal(signal.SIGHUP)

    def fired() -> list[str]:
        return [k.decode() for k in r.broker.client.keys(r.broker.keys.job("cron.tick.*"))]

    wait_until(fired, timeout=15, what="a tick fired once the scheduler is on")
    assert "cron: on ([scheduler] enabled = true)" in r.logs()


def test_the_dashboard_shows_a_jobs_own_retry_policy(tmp_path, server, namespace, broker):
    import httpx

    from tests.web import Dashboard

    j = jobfuncs.flaky.options(max_attempts=2, backoff=NOW,
                               dont_retry_on=["KeyError"]).enqueue("value")
    dash = Dashboard(tmp_path, server.url, namespace)
    try:
        page = httpx.get(f"{dash.base}/jobs/{j.id}", timeout=10).text
        api = httpx.get(f"{dash.base}/api/jobs/{j.id}", timeout=10).json()
    finally:
        dash.stop()
    assert "0 of 2" in page and "fixed, base 0.0 s, cap 3600.0 s" in page
    assert "Never retry on</dt><dd class=\"mono\">KeyError" in page
    assert (api["max_attempts"], api["backoff"]["kind"], api["dont_retry_on"]) == (
        2, "fixed", ["KeyError"])


def test_functions_leaves_out_jobvisor_s_own():
    import jobs.hooks  # noqa: F401 - registers jobs.hooks:on_failure
    from jobs.settings import JobDefaults
    from supervisor.cli.function_commands import function_rows
    from supervisor.runtime.preload import loaded_functions

    names = [r["name"] for r in function_rows(loaded_functions(JobDefaults()))]
    assert "jobs.hooks:on_failure" not in names
    assert "tests.jobfuncs:add" in names


def test_inline_must_be_a_bool(broker):
    # Found by the fuzz test: a truthy object ran the call inline, as True would.
    from jobs import ConfigurationError, Queue

    with pytest.raises(ConfigurationError, match="inline must be True or False, got 'yes'"):
        Queue("default", broker).options(inline="yes").enqueue("tests.jobfuncs:add", 1, 2)
    assert Queue("default", broker).counts()["queued"] == 0
