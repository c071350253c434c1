"""Per-worker health flags and busy seconds: the rules, then real supervisors showing them
in `jobvisor workers`, in the metrics, and through kills and recycles."""

from __future__ import annotations

import json
import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from jobs import JobState, Queue
from jobs.cluster import DEFAULT_POOL
from supervisor.config import Config, PoolSpec, SupervisorSettings
from supervisor.runtime.health import Health, worker_health
from supervisor.runtime.slots import ChildState, SlotView
from tests.helpers import wait_until
from tests.procs import start_and_wait
from tests.test_cli import cli

MiB = 2**20


def pool(**settings: float) -> PoolSpec:
    """The default pool of a config with these ``[supervisor]`` settings."""
    return Config(supervisor=SupervisorSettings(**settings)).pool_specs()[DEFAULT_POOL]


SPEC = pool(heartbeat_timeout=30.0, max_memory_per_child=100)


def view(state: ChildState = ChildState.IDLE, **fields: float) -> SlotView:
    values = dict(started=0.0, deadline=0.0, soft_deadline=0.0, heartbeat=100.0)
    values.update(fields)
    return SlotView(state=state, pid=1, jobs_done=0, jobs_failed=0, attempt=1,
                    idle_since=0.0, busy_time=0.0, job_id="", queue="", token="", function="",
                    next_token="", uncounted=b"", held=b"", **values)


def flag(v: SlotView, now: float = 100.0, spawned: float = 99.0, rss: int = 10 * MiB,
         spec: PoolSpec = SPEC) -> Health:
    return worker_health(v, now, spawned, rss, spec)[0]


def test_each_flag_comes_from_what_the_supervisor_watches():
    assert flag(view()) is Health.OK
    # Silent for more than five beats (the kill comes at heartbeat_timeout).
    assert flag(view(heartbeat=94.0)) is Health.STALLED
    assert flag(view(heartbeat=96.0)) is Health.OK
    # ... or half the timeout, when that is shorter: the flag always comes before the kill.
    assert flag(view(heartbeat=97.5), spec=pool(heartbeat_timeout=4.0)) is Health.STALLED
    busy = ChildState.BUSY
    assert flag(view(busy, started=90.0, deadline=400.0, soft_deadline=95.0)) \
        is Health.OVERRUNNING
    assert flag(view(busy, started=90.0, deadline=400.0, soft_deadline=105.0)) is Health.OK
    # Without a soft timeout: past 80% of the hard one.
    assert flag(view(busy, started=90.0, deadline=102.0)) is Health.OVERRUNNING
    assert flag(view(busy, started=90.0, deadline=110.0)) is Health.OK
    # A job that returned has no deadline left: writing its outcome is not overrunning.
    assert flag(view(busy, started=10.0)) is Health.OK
    assert flag(view(), rss=101 * MiB) is Health.MEMORY
    assert flag(view(), rss=101 * MiB, spec=pool()) is Health.OK
    assert flag(view(ChildState.BOOTING, heartbeat=90.0), spawned=99.0) is Health.OK
    assert flag(view(ChildState.BOOTING, heartbeat=90.0), spawned=90.0) is Health.SLOW_BOOT
    why = worker_health(view(heartbeat=94.0), 100.0, 0.0, 0, SPEC)[1]
    assert why == "no heartbeat for 6.0 s (killed at 30 s)"


def metrics_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def by_pid(r) -> dict[int, dict]:
    return {w["pid"]: w for w in json.loads(cli(r, "workers", "--json").stdout)}


def test_a_stalled_and_an_overrunning_worker_are_flagged_before_they_are_killed(sup):
    port = metrics_port()
    r = start_and_wait(sup, extra="heartbeat_timeout = 6.0",
                       tail=f'[metrics]\naddress = "127.0.0.1:{port}"')
    q = Queue("default", r.broker)
    late = q.enqueue("tests.jobfuncs:overruns", 30)
    stuck = q.enqueue("tests.jobfuncs:catastrophic_regex")
    rows = wait_until(lambda: (w := by_pid(r)) and {x["health"] for x in w.values()} == {
        "stalled", "overrunning"} and w, timeout=20, interval=0.2, what="both flags")
    flagged = {w["job"]: w for w in rows.values()}
    assert flagged[stuck.id]["health_reason"].startswith("no heartbeat for ")
    assert flagged[late.id]["health_reason"].startswith("past its soft timeout by ")
    samples = scrape(port)
    assert samples[("jobvisor_worker_health", (("health", "stalled"), ("pool", "default")))] == 1
    assert samples[("jobvisor_worker_health", (("health", "overrunning"), ("pool", "default")))] == 1
    assert samples[("jobvisor_worker_health", (("health", "ok"), ("pool", "default")))] == 0
    text = cli(r, "workers").stdout
    assert "HEALTH" in text and "stalled" in text and "overrunning" in text
    # The flag came first; the kill follows at heartbeat_timeout.
    wait_until(lambda: stuck.refresh().state is JobState.DEAD, timeout=30)
    assert stuck.error.type == "HeartbeatLost"
    late.cancel()


def test_a_worker_above_max_memory_per_child_is_flagged(sup):
    r = start_and_wait(sup, workers=1, extra="max_memory_per_child = 1")
    # A worker still booting is "ok" (or "slow_boot"); once up, its memory is judged.
    (row,) = wait_until(lambda: [w for w in by_pid(r).values() if w["state"] == "idle"],
                        timeout=10, interval=0.2, what="the worker to be up")
    assert row["health"] == "memory"
    assert "above max_memory_per_child 1 MiB" in row["health_reason"]
    assert "memory" in cli(r, "workers").stdout


def test_busy_seconds_count_the_time_on_jobs_and_never_go_back(sup):
    port = metrics_port()
    r = start_and_wait(sup, workers=1, tail=f'[metrics]\naddress = "127.0.0.1:{port}"')
    busy = ("jobvisor_worker_busy_seconds_total", (("pool", "default"),))
    alive = ("jobvisor_worker_alive_seconds_total", (("pool", "default"),))
    before = scrape(port)
    q = Queue("default", r.broker)
    assert q.enqueue("examples.cpu:spin", 1.0).result(timeout=15) is not None
    after = scrape(port)
    spent = after[busy] - before[busy]
    assert 1.0 <= spent < 3.0 and after[alive] - before[alive] >= spent
    # A worker killed in a job takes its seconds along: the counter keeps them.
    killed = q.options(timeout=1.0, max_attempts=1).enqueue("examples.cpu:spin", 30)
    wait_until(lambda: killed.refresh().state is JobState.ACTIVE, timeout=10)
    during = scrape(port)[busy]
    wait_until(lambda: killed.refresh().state is JobState.DEAD, timeout=15)
    r.wait_workers(1)
    final = scrape(port)
    assert final[busy] >= during >= after[busy] and final[busy] - after[busy] >= 1.0
    assert final[alive] > final[busy]
    worker = next(iter(by_pid(r).values()))
    assert worker["busy_seconds"] <= worker["uptime"]
