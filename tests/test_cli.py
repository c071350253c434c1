"""Every CLI command against a real supervisor and server: output, JSON and exit codes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs import JobState, Queue, Worker, batch
from jobs.limits import set_limit
from tests.helpers import stop_process, wait_until
from tests.procs import start_and_wait

ROOT = Path(__file__).parent.parent


def cli(r, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor", "--config", str(r.config), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture
def r(sup):
    return start_and_wait(sup)


def test_enqueue_show_wait_result(r):
    out = cli(r, "enqueue", "tests.jobfuncs:add", "2", "40", "--priority", "HIGH")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    waited = cli(r, "wait", job_id, "--json")
    assert waited.returncode == 0 and json.loads(waited.stdout)["result"] == 42
    shown = json.loads(cli(r, "show", job_id, "--json").stdout)
    for key in ("id", "function", "queue", "priority", "state", "attempts", "max_attempts",
                "error", "result", "progress", "enqueued_at", "started_at", "finished_at"):
        assert key in shown
    assert (shown["state"], shown["priority"], shown["result"]) == ("completed", 20, 42)
    assert cli(r, "result", job_id).stdout.strip() == "42"
    text = cli(r, "show", job_id).stdout
    assert "state         completed" in text and "function      tests.jobfuncs:add" in text


def test_show_tells_what_holds_a_job(r):
    """Parents awaited, the batch, a limit holding a queued job, a pending cancel request."""
    set_limit(queue="side", max_concurrency=1, broker=r.broker)
    q = Queue("side", r.broker)  # no supervisor serves it: only the worker below claims
    first, second = batch([q.call("tests.jobfuncs:add", 1, 1),
                           q.call("tests.jobfuncs:add", 2, 2)]).enqueue(r.broker,
                                                                        batch_id="b-7").jobs()
    child = q.options(depends_on=[first]).enqueue("tests.jobfuncs:add", 3, 3)
    w = Worker(["side"], broker=r.broker)
    assert w.claim().id == first.id and w.claim() is None  # the limit holds the second
    assert first.cancel("operator said stop") and first.refresh().state is JobState.ACTIVE

    running = cli(r, "show", first.id).stdout
    assert "cancel        requested: operator said stop" in running
    assert "batch         b-7" in running
    held = cli(r, "show", second.id).stdout
    assert "state         queued" in held and "held_by       limit q:side" in held
    waiting = cli(r, "show", child.id).stdout
    assert "waiting_on    1 parent job(s) not final yet" in waiting
    assert "batch" not in waiting and "held_by" not in waiting and "cancel " not in waiting

    shown = {j.id: json.loads(cli(r, "show", j.id, "--json").stdout)
             for j in (first, second, child)}
    assert [(d["waiting_on"], d["batch_id"], d["held_by"], d["cancel_requested"])
            for d in shown.values()] == [(0, "b-7", None, "operator said stop"),
                                         (0, "b-7", "q:side", None),
                                         (1, None, None, None)]


def test_enqueue_under_a_named_limit(r):
    set_limit("reports-api", max_concurrency=1, broker=r.broker)
    ids = [cli(r, "enqueue", "tests.jobfuncs:add", str(i), "1", "--queue", "side",
               "--limit", "reports-api").stdout.strip() for i in range(2)]
    w = Worker(["side"], broker=r.broker)  # no supervisor serves "side"
    assert w.claim().id == ids[0] and w.claim() is None
    assert "held_by       limit n:reports-api" in cli(r, "show", ids[1]).stdout
    bad = cli(r, "enqueue", "tests.jobfuncs:add", "1", "1", "--limit", "reports-apl")
    assert bad.returncode == 1 and "limit 'reports-apl'" in bad.stderr
    assert "is not defined" in bad.stderr and "set_limit('reports-apl'" in bad.stderr


def test_enqueue_options_and_bad_input(r):
    out = cli(r, "enqueue", "tests.jobfuncs:add", "1", "--kwargs", '{"b": 2}', "--delay", "60",
              "--id", "my-id", "--max-attempts", "2", "--timeout", "9")
    assert out.stdout.strip() == "my-id"
    shown = json.loads(cli(r, "show", "my-id", "--json").stdout)
    assert shown["state"] == "scheduled" and shown["kwargs"] == {"b": 2}
    bad = cli(r, "enqueue", "tests.jobfuncs:add", "not-json")
    assert bad.returncode == 1 and "argument 1 'not-json' is not a JSON value" in bad.stderr
    bad = cli(r, "enqueue", "tests.jobfuncs:add", "--priority", "urgent")
    assert bad.returncode == 1 and "neither a level" in bad.stderr
    bad = cli(r, "enqueue", "tests.jobfuncs:add", "--at", "2030-01-01T00:00:00")
    assert bad.returncode == 1 and "time zone offset" in bad.stderr
    missing = cli(r, "show", "nope")
    assert missing.returncode == 1 and "no job 'nope'" in missing.stderr
    # Workflow options: a dependent waits on the scheduled job; uniqueness returns it.
    child = cli(r, "enqueue", "tests.jobfuncs:add", "1", "1", "--depends-on", "my-id",
                "--on-parent-failure", "run").stdout.strip()
    assert json.loads(cli(r, "show", child, "--json").stdout)["state"] == "waiting"
    first = cli(r, "enqueue", "tests.jobfuncs:add", "5", "5", "--delay", "60",
                "--unique-for", "60").stdout.strip()
    again = cli(r, "enqueue", "tests.jobfuncs:add", "5", "5", "--unique-for", "60")
    assert again.stdout.strip() == first
    bad = cli(r, "enqueue", "tests.jobfuncs:add", "--depends-on", "nope")
    assert bad.returncode == 1 and "depends on job nope, which does not exist" in bad.stderr


def test_wait_reports_progress_and_exit_codes(r):
    job_id = cli(r, "enqueue", "tests.jobfuncs:reports_progress", "300").stdout.strip()
    done = cli(r, "wait", job_id, "--json")
    assert done.returncode == 0
    assert json.loads(done.stdout)["progress"]["message"] == "step 300"
    dead = cli(r, "enqueue", "tests.jobfuncs:gives_up").stdout.strip()
    out = cli(r, "wait", dead)
    assert out.returncode == 10 and "cannot ever work" in out.stdout
    assert cli(r, "result", dead).returncode == 10
    later = cli(r, "enqueue", "tests.jobfuncs:add", "1", "1", "--delay", "600").stdout.strip()
    assert cli(r, "wait", later, "--timeout", "0.3").returncode == 12
    assert cli(r, "cancel", later).returncode == 0
    assert cli(r, "wait", later).returncode == 11


def test_stats_hosts_workers(r):
    q = Queue("default", r.broker)
    q.enqueue("tests.jobfuncs:add", 1, 1).result(timeout=10)
    q.options(delay=600).enqueue("tests.jobfuncs:add", 1, 1)
    # Workers add their completion counts when they go idle (at most a second later).
    row = wait_until(lambda: next(x for x in json.loads(cli(r, "stats", "--json").stdout)
                                  if x["queue"] == "default" and x["last_minute"]["completed"]),
                     timeout=10)
    assert row["scheduled"] == 1 and row["last_minute"]["completed"] >= 1
    assert row["last_hour"]["completed"] >= 1 and row["throughput"] > 0
    assert "QUEUE" in cli(r, "stats").stdout
    hosts = json.loads(cli(r, "hosts", "--json").stdout)
    assert [h["pid"] for h in hosts] == [r.proc.pid] and hosts[0]["workers"] == 2
    # A worker is counted by its title from its fork, and shows "booting" in the
    # supervisor's published state until it has connected: both are ready after that.
    workers = wait_until(lambda: (w := json.loads(cli(r, "workers", "--json").stdout)) and len(
        w) == 2 and {x["state"] for x in w} <= {"idle", "busy"} and w, timeout=10)
    assert len(workers) == 2 and {w["state"] for w in workers} <= {"idle", "busy"}
    assert "SUPERVISOR" in cli(r, "workers").stdout


def test_busy_worker_is_listed(r):
    j = Queue("default", r.broker).enqueue("examples.cpu:spin", 3)
    wait_until(lambda: j.refresh().state is JobState.ACTIVE, timeout=10)
    workers = wait_until(lambda: [w for w in json.loads(cli(r, "workers", "--json").stdout)
                                  if w["state"] == "busy"], timeout=10)
    assert workers[0]["job"] == j.id and workers[0]["function"] == "examples.cpu:spin"


def test_workers_show_failed_jobs_and_uptime(r):
    def totals():
        rows = json.loads(cli(r, "workers", "--json").stdout)
        return (sum(w["jobs_done"] for w in rows), sum(w["jobs_failed"] for w in rows),
                min(w["uptime"] for w in rows))

    done, failed, _ = totals()
    q = Queue("default", r.broker)
    for job in [q.enqueue("tests.jobfuncs:key_error"), q.enqueue("tests.jobfuncs:gives_up"),
                q.enqueue("tests.jobfuncs:add", 1, 2)]:
        wait_until(lambda job=job: job.refresh().state.is_final, timeout=10)
    now = wait_until(lambda: (t := totals())[0] >= done + 3 and t, timeout=10)
    assert now[:2] == (done + 3, failed + 2) and now[2] > 0
    assert "FAILED" in cli(r, "workers").stdout


def test_dead_letter_commands(r):
    q = Queue("default", r.broker)
    ids = [q.enqueue("tests.jobfuncs:gives_up").id for _ in range(3)]
    other = q.enqueue("tests.jobfuncs:key_error").id
    for i in [*ids, other]:
        wait_until(lambda i=i: r.broker.jobs.state_of(i) == "dead", timeout=10)
    listed = json.loads(cli(r, "dead", "list", "--json").stdout)
    assert {d["id"] for d in listed} == {*ids, other}
    only = json.loads(cli(r, "dead", "list", "--function", "tests.jobfuncs:key_error",
                          "--json").stdout)
    assert [d["id"] for d in only] == [other]
    assert "Fail" in cli(r, "dead", "show", ids[0]).stdout
    refused = cli(r, "dead", "purge")
    assert refused.returncode == 1 and "--all" in refused.stderr
    assert "requeued 1" in cli(r, "dead", "requeue", other).stdout
    purged = json.loads(cli(r, "dead", "purge", "--error-type", "jobs.errors.Fail",
                            "--json").stdout)
    assert purged == {"purged": 3}


def test_pause_and_resume(r):
    assert cli(r, "pause", "default").returncode == 0
    j = Queue("default", r.broker).enqueue("tests.jobfuncs:add", 1, 2)
    with pytest.raises(Exception, match="still queued"):
        j.result(timeout=1.5)
    assert json.loads(cli(r, "stats", "--json").stdout)[0]["paused"] is True
    assert cli(r, "resume", "default").returncode == 0
    assert j.result(timeout=10) == 3


def test_scale_and_reload_local_and_remote(r):
    assert cli(r, "scale", "3").returncode == 0
    r.wait_workers(3)
    ident = f"{socket.gethostname()}:{r.proc.pid}"
    assert cli(r, "scale", "1", "--host", ident).returncode == 0
    r.wait_workers(1)
    assert cli(r, "reload", "--host", ident).returncode == 0
    wait_until(lambda: "control message: reload" in r.logs(), timeout=10)
    assert cli(r, "reload").returncode == 0
    wait_until(lambda: "got SIGHUP" in r.logs(), timeout=10)
    bad = cli(r, "scale", "0")
    assert bad.returncode == 1 and "at least 1" in bad.stderr


def test_events(r):
    j = Queue("default", r.broker).enqueue("tests.jobfuncs:add", 1, 2)
    j.result(timeout=10)
    wait_until(lambda: "worker_started" in cli(r, "events", "--count", "50").stdout, 10)
    events = [json.loads(line) for line in
              cli(r, "events", "--json", "--job", j.id).stdout.splitlines()]
    assert [e["e"] for e in events] == ["enqueued", "started", "completed"]
    follow = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "--config", str(r.config), "events", "--follow",
         "--count", "0", "--json", "--for", "20"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        # The follower is blocked in XREAD on the server before the next job is enqueued.
        wait_until(lambda: any(c.get("cmd") == "xread" and "b" in c.get("flags", "")
                               for c in r.broker.client.client_list()), timeout=10)
        k = Queue("default", r.broker).enqueue("tests.jobfuncs:add", 5, 5)
        k.result(timeout=10)
        seen = set()
        assert follow.stdout is not None
        for line in follow.stdout:  # each event as it comes; ends at --for at the latest
            event = json.loads(line)
            seen.add((event["e"], event.get("id")))
            if ("completed", k.id) in seen:
                break
        assert ("completed", k.id) in seen
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(10)


def test_top_renders_once(r):
    Queue("default", r.broker).enqueue("tests.jobfuncs:add", 1, 2).result(timeout=10)
    out = cli(r, "top", "--once")
    assert out.returncode == 0
    assert "queues" in out.stdout and "workers" in out.stdout and "default" in out.stdout


def test_metrics_endpoint(sup):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = start_and_wait(sup, tail=f'[metrics]\naddress = "127.0.0.1:{port}"')
    q = Queue("default", r.broker)
    q.enqueue("tests.jobfuncs:add", 1, 2).result(timeout=10)
    j = q.enqueue("examples.cpu:runaway")
    wait_until(lambda: j.refresh().state is JobState.DEAD, timeout=15)

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                      timeout=5).read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    # The killed worker's replacement counts once it has booted.
    samples = wait_until(lambda: (m := scrape()) and sum(
        v for (n, _), v in m.items() if n == "jobvisor_workers") == 2 and m, timeout=15,
        what="two workers in the metrics")
    assert samples[("jobvisor_jobs_total", (("outcome", "completed"), ("queue", "default")))] >= 1
    assert samples[("jobvisor_worker_kills_total", (("reason", "hard_timeout"),))] == 1
    assert samples[("jobvisor_job_duration_seconds_count", (("queue", "default"),))] >= 1
    assert ("jobvisor_queue_jobs", (("queue", "default"), ("state", "queued"))) in samples
    assert sum(v for (n, _), v in samples.items() if n == "jobvisor_workers") == 2
    assert "jobvisor_lease_reclaims_total" in {n for n, _ in samples}


def test_demo_short_run():
    out = subprocess.run([sys.executable, "-m", "supervisor", "demo", "--jobs", "4"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "summary" in out.stdout
    assert "HardTimeout: hard timeout after 1 s" in out.stdout
    assert "WorkerCrashed" in out.stdout and "transient failure" in out.stdout
    assert "'completed': 12" in out.stdout and "'dead': 2" in out.stdout
    assert "CRITICAL" in out.stdout and "queues" in out.stdout
    assert "dashboard: http://127.0.0.1:" in out.stdout


def test_demo_keep_leaves_the_dashboard_up_until_interrupted():
    import re

    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "supervisor", "demo", "--jobs", "2",
                             "--keep"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT)
    try:
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "keep running" in line:
                break
        url = re.search(r"keep running: (http://\S+/)", "".join(seen))
        assert url, "".join(seen)
        page = httpx.get(url.group(1), headers={"Accept": "text/html"})
        assert page.status_code == 200 and 'data-queue="default"' in page.text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(url.group(1), timeout=2)
    finally:
        stop_process(proc)
