"""Pools per queue in one supervisor: `[[pools]]` in config.toml, each pool's workers on
its own queues under its own limits; scaling, pausing and reloading them at run time."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import psutil
import pytest

from jobs import Queue
from jobs.cluster import PausePool, Scale, request_scale, send_control, take_control
from jobs.errors import ConfigurationError
from supervisor.config import load_config
from supervisor.errors import ConfigError
from supervisor.runtime.scaling import POOL_MAX, Machine
from tests.helpers import wait_until
from tests.procs import CONFIG, Running

ROOT = Path(__file__).parent.parent

REPORTS = """
[[pools]]
name = "reports"
queues = ["reports", "pdf"]
weights = [3, 1]
workers = {workers}
{extra}
"""


def reports(workers: int = 1, extra: str = "") -> str:
    return REPORTS.format(workers=workers, extra=extra)


def cli(r: Running, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor", "--config", str(r.config), *args],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)


def ident(r: Running) -> str:
    return f"{socket.gethostname()}:{r.proc.pid}"


def titles(r: Running) -> str:
    """The process titles of the supervisor's workers, one per line."""
    found = []
    for p in r.workers():
        with contextlib.suppress(psutil.Error):
            found.append(" ".join(p.cmdline()))
    return "\n".join(found)


def by_pool(r: Running) -> dict[str, set[int]]:
    """The pids of the supervisor's workers per pool, as `jobvisor workers --json` shows."""
    out = cli(r, "workers", "--json")
    assert out.returncode == 0, out.stderr
    pools: dict[str, set[int]] = {}
    for w in json.loads(out.stdout):
        if w["supervisor"] == ident(r):
            pools.setdefault(w["pool"], set()).add(w["pid"])
    return pools


def wait_pools(r: Running, **sizes: int) -> dict[str, set[int]]:
    """Wait until each named pool runs that many workers (and no other pool runs any)."""
    def check() -> dict[str, set[int]] | None:
        found = by_pool(r)
        counts = {name: len(pids) for name, pids in found.items() if pids}
        return found if counts == {k: v for k, v in sizes.items() if v} else None

    return wait_until(check, timeout=30, interval=0.2, what=f"pools {sizes}")


def start(sup, workers: int = 1, tail: str = "", extra: str = "", **sizes: int) -> Running:
    r = sup(workers=workers, tail=tail, extra=extra)
    wait_pools(r, **({"default": workers} | sizes))
    return r


# -- configuration --------------------------------------------------------------------------


def test_a_pool_has_its_queues_and_its_limits_else_the_supervisor_s(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[supervisor]\nworkers = 2\nmax_jobs_per_child = 50\nheartbeat_timeout = 9\n'
                    '[worker]\nqueues = ["default"]\n'
                    + reports(3, "max_jobs_per_child = 5\nmax_memory_per_child = 300\n"
                                 "job_memory_limit = 900\nkill_grace = 2\nlog_jobs = true"))
    config = load_config(path)
    specs = config.pool_specs()
    assert list(specs) == ["default", "reports"]
    default, pool = specs["default"], specs["reports"]
    assert (default.queues, default.workers, default.max_jobs_per_child) == (["default"], 2, 50)
    assert (pool.queues, pool.weights, pool.workers) == (["reports", "pdf"], [3, 1], 3)
    assert (pool.max_jobs_per_child, pool.max_memory_per_child, pool.job_memory_limit,
            pool.kill_grace, pool.log_jobs) == (5, 300, 900, 2, True)
    assert pool.heartbeat_timeout == 9  # not set: the supervisor's
    assert config.queues == ["default", "reports", "pdf"]
    alone = tmp_path / "alone.toml"
    alone.write_text('[worker]\nqueues = []\n' + reports(2))
    assert list(load_config(alone).pool_specs()) == ["reports"]  # no default pool


def test_the_shipped_pool_example_loads_once_uncommented(tmp_path):
    text = (ROOT / "config.toml").read_text()
    block = text[text.index("# [[pools]]"):].splitlines()
    path = tmp_path / "c.toml"
    path.write_text("\n".join(line[2:] for line in block if line.startswith("# ")))
    spec = load_config(path).pool_specs()["reports"]
    assert (spec.queues, spec.weights, spec.workers, spec.max_jobs_per_child) == (
        ["reports", "pdf"], [3, 1], 2, 100)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (reports() + reports(), "pools: each name must be used once, 'reports' is not"),
        ('[[pools]]\nname = "default"\nqueues = ["x"]\n',
         "pool name 'default' is taken by the default pool"),
        ('[[pools]]\nname = "a b"\nqueues = ["x"]\n', "at `$.pools[0].name`"),
        ('[[pools]]\nname = "a"\nqueues = ["x y"]\n', "at `$.pools[0].queues[0]`"),
        ('[[pools]]\nname = "a"\nqueues = []\n', "at `$.pools[0].queues`"),
        ('[[pools]]\nname = "a"\n', "missing required field `queues` - at `$.pools[0]`"),
        ('[[pools]]\nname = "a"\nqueues = ["x", "y"]\nweights = [1]\n',
         "pool 'a': weights must give one number per queue"),
        ('[[pools]]\nname = "a"\nqueues = ["x"]\nmax_jobs = 3\n',
         "unknown field `max_jobs` - at `$.pools[0]`"),
        ('[[pools]]\nname = "a"\nqueues = ["x"]\nworkers = -1\n', "at `$.pools[0].workers`"),
        ('[supervisor]\nworkers = 2\nmax_workers = 4\n' + reports(3),
         "the pools ask for 5 workers (2 in the default pool, 3 in [[pools]]), more than "
         "supervisor.max_workers (4)"),
        ('[supervisor]\nmax_workers = 3\n' + reports(3),
         "[[pools]] take all 3 workers of supervisor.max_workers, leaving none for the "
         "default pool"),
        ('[supervisor]\nmin_workers = 1\nmax_workers = 4\n[worker]\nqueues = []\n' + reports(),
         "autoscale the default pool, which `$.worker.queues` = [] turns off"),
    ],
)
def test_bad_pool_configs_are_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)


def test_pools_above_what_the_host_allows_are_refused_at_start(tmp_path):
    path = tmp_path / "c.toml"
    small = Machine(cores=1, memory=8 * 2**30)  # derived maximum: 4 workers
    path.write_text("[supervisor]\nworkers = 2\n" + reports(3))
    with pytest.raises(ConfigError, match=r"supervisor.workers = 2 and the 3 workers of "
                       r"\[\[pools\]\] \(5 in all\) are above the 4 workers this host allows"):
        load_config(path).limit(small)
    path.write_text(reports(4))
    with pytest.raises(ConfigError, match="leaving none for the default pool"):
        load_config(path).limit(small)
    path.write_text("[worker]\nqueues = []\n" + reports(4))
    assert load_config(path).limit(small).workers == 4


def test_jobvisor_run_refuses_a_bad_pool_with_the_key(tmp_path, server, namespace):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(url=server.url, ns=namespace, data=tmp_path / "var",
                                    workers=1, graceful=10.0, lease=3.0,
                                    modules='["tests.jobfuncs"]', sup_extra="",
                                    tail=reports() + reports()))
    out = subprocess.run([sys.executable, "-m", "supervisor", "--config", str(config), "run"],
                         capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert out.returncode == 2
    assert "pools: each name must be used once, 'reports' is not" in out.stderr


# -- running ---------------------------------------------------------------------------------


def test_each_pool_runs_only_the_jobs_of_its_queues(sup):
    r = start(sup, workers=1, tail=reports(2), reports=2)
    pools = by_pool(r)
    text = cli(r, "hosts").stdout
    assert "POOLS" in text and "default 0/1, reports 0/2" in text
    jobs = {q: [Queue(q, r.broker).enqueue("tests.jobfuncs:worker_pid") for _ in range(8)]
            for q in ("default", "reports", "pdf")}
    ran = {q: {j.result(timeout=20) for j in js} for q, js in jobs.items()}
    assert ran["default"] <= pools["default"]
    assert ran["reports"] | ran["pdf"] <= pools["reports"]
    hosts = json.loads(cli(r, "hosts", "--json").stdout)
    mine = next(h for h in hosts if h["id"] == ident(r))
    assert mine["queues"] == ["default", "reports", "pdf"]
    assert [(p["name"], p["queues"], p["target"], p["workers"], p["paused"])
            for p in mine["pools"]] == [("default", ["default"], 1, 1, False),
                                        ("reports", ["reports", "pdf"], 2, 2, False)]
    workers = cli(r, "workers").stdout.splitlines()
    assert workers[0].split()[:3] == ["SUPERVISOR", "POOL", "PID"]
    assert sum(1 for line in workers if line.split()[1] == "reports") == 2
    assert "starting 3 workers in pools default (1 on default), reports (2 on reports,pdf)" in (
        r.logs())


def test_scale_a_pool_by_control_message_and_by_the_cli(sup):
    r = start(sup, workers=1, tail=reports(1), extra="max_workers = 4", reports=1)
    send_control(ident(r), Scale(workers=2, pool="reports"), r.broker)
    wait_pools(r, default=1, reports=2)
    out = cli(r, "scale", "--pool", "reports", "0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"asked {ident(r)} to run 0 workers in pool reports (now 2)"
    wait_pools(r, default=1, reports=0)
    job = Queue("reports", r.broker).enqueue("tests.jobfuncs:worker_pid")
    assert cli(r, "scale", "--pool", "reports", "3").returncode == 0
    pools = wait_pools(r, default=1, reports=3)
    assert job.result(timeout=20) in pools["reports"]
    too_many = cli(r, "scale", "--pool", "reports", "4")
    assert too_many.returncode == 1
    assert (f"scale 4 refused: {ident(r)} runs at most 4 workers (supervisor.max_workers) and "
            "its other pools want 1, leaving 3 for pool 'reports'") in too_many.stderr
    unknown = cli(r, "scale", "--pool", "mail", "1")
    assert unknown.returncode == 1
    assert f"supervisor {ident(r)} has no pool 'mail' (its pools: default, reports)" in (
        unknown.stderr)
    # The supervisor has the last word on a message that skipped the CLI's checks.
    send_control(ident(r), Scale(workers=3, pool="default"), r.broker)
    send_control(ident(r), Scale(workers=1, pool="mail"), r.broker)
    wait_until(lambda: "scale to 1 workers in pool mail refused: no pool 'mail'" in r.logs(),
               timeout=10)
    assert ("scale to 3 workers refused: at most 4 workers (supervisor.max_workers), and the "
            "other pools want 3") in r.logs()
    assert by_pool(r) == pools


def test_sigttin_and_sigttou_scale_the_default_pool_only(sup):
    r = start(sup, workers=1, tail=reports(2), reports=2)
    before = by_pool(r)
    r.proc.send_signal(signal.SIGTTIN)
    after = wait_pools(r, default=2, reports=2)
    assert after["reports"] == before["reports"]
    assert "SIGTTIN: 2 workers wanted in the default pool" in r.logs()
    # One at a time: a signal sent while the same one is pending merges with it.
    r.proc.send_signal(signal.SIGTTOU)
    wait_until(lambda: "SIGTTOU: 1 workers wanted in the default pool" in r.logs(), timeout=10)
    r.proc.send_signal(signal.SIGTTOU)
    wait_until(lambda: "SIGTTOU: 0 workers wanted in the default pool" in r.logs(), timeout=10)
    final = wait_pools(r, default=0, reports=2)  # beside other pools it may stop
    assert final["reports"] == before["reports"]


def test_a_reload_starts_new_pools_and_retires_removed_ones(sup):
    r = start(sup, workers=1, tail=reports(1), reports=1)
    old = by_pool(r)
    r.config.write_text(r.text.replace(reports(1), '[[pools]]\nname = "mail"\n'
                                                   'queues = ["mail"]\nworkers = 2\n'))
    r.proc.send_signal(signal.SIGHUP)
    pools = wait_pools(r, default=1, mail=2)
    assert not pools["default"] & old["default"]  # rolled: new code, new settings
    assert "retiring: its pool 'reports' was removed" in r.logs()
    mail = Queue("mail", r.broker).enqueue("tests.jobfuncs:worker_pid")
    assert mail.result(timeout=20) in pools["mail"]
    entry = json.loads(cli(r, "hosts", "--json").stdout)[0]
    assert [p["name"] for p in entry["pools"]] == ["default", "mail"]


def test_a_pool_s_own_max_jobs_per_child_recycles_only_its_workers(sup):
    r = start(sup, workers=1, tail=reports(1, "max_jobs_per_child = 2"), reports=1)
    default_pid = by_pool(r)["default"]
    pids = [Queue("reports", r.broker).enqueue("tests.jobfuncs:worker_pid").result(timeout=20)
            for _ in range(6)]
    assert len(set(pids)) == 3 and pids[0] == pids[1] and pids[2] == pids[3]
    again = [Queue("default", r.broker).enqueue("tests.jobfuncs:worker_pid").result(timeout=20)
             for _ in range(4)]
    assert set(again) == default_pid
    assert r.logs().count("recycles after 2 jobs") >= 2


def test_a_paused_pool_keeps_its_workers_and_claims_nothing_until_resumed(sup):
    r = start(sup, workers=1, tail=reports(2), reports=2)
    pools = by_pool(r)
    out = cli(r, "pool", "pause", "reports")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (f"asked {ident(r)} to pause pool reports (it was running, "
                                  "2 workers)")

    def states() -> list[str]:
        return [w["state"] for w in json.loads(cli(r, "workers", "--json").stdout)
                if w["pool"] == "reports"]

    wait_until(lambda: states() == ["paused", "paused"], timeout=10, interval=0.1,
               what="the pool's workers paused")
    held = Queue("reports", r.broker).enqueue("tests.jobfuncs:worker_pid")
    other = Queue("default", r.broker).enqueue("tests.jobfuncs:worker_pid")
    assert other.result(timeout=20) in pools["default"]
    with pytest.raises(Exception, match="still queued"):
        held.result(timeout=1.5)
    entry = json.loads(cli(r, "hosts", "--json").stdout)[0]
    assert next(p for p in entry["pools"] if p["name"] == "reports")["paused"] is True
    assert "reports 0/2 paused" in cli(r, "hosts").stdout
    assert cli(r, "pool", "resume", "reports").returncode == 0
    assert held.result(timeout=20) in pools["reports"]
    assert by_pool(r) == pools  # the same workers: kept, not restarted
    assert "control message: pause pool reports" in r.logs()
    unknown = cli(r, "pool", "pause", "mail")
    assert unknown.returncode == 1 and "has no pool 'mail'" in unknown.stderr


def test_a_pool_paused_before_a_reload_stays_paused_in_the_new_generation(sup):
    r = start(sup, workers=1, tail=reports(1), reports=1)
    send_control(ident(r), PausePool(pool="reports", paused=True), r.broker)
    old = by_pool(r)["reports"]
    r.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: (p := by_pool(r).get("reports")) and not p & old, timeout=30,
               interval=0.2, what="the pool rolled")
    held = Queue("reports", r.broker).enqueue("tests.jobfuncs:worker_pid")
    with pytest.raises(Exception, match="still queued"):
        held.result(timeout=1.5)
    send_control(ident(r), PausePool(pool="reports", paused=False), r.broker)
    assert held.result(timeout=20) in by_pool(r)["reports"]


# -- the library's side: supervisors of an older version ---------------------------------------


def test_scale_of_an_older_supervisor_sends_what_it_reads_and_refuses_a_pool(broker):
    entry = {"host": "old", "pid": 1, "started": 0.0, "config_version": 1,
             "queues": ["default"], "target": 2, "max_workers": 8, "workers": []}
    broker.client.set(broker.keys.supervisor("old:1"), msgspec.json.encode(entry), px=60_000)
    with pytest.raises(ConfigurationError, match="runs a jobvisor without pools"):
        request_scale("old:1", 2, POOL_MAX, broker, pool="reports")
    with pytest.raises(ConfigurationError, match="at least 1 worker"):
        request_scale("old:1", 0, POOL_MAX, broker)
    assert request_scale("old:1", 3, POOL_MAX, broker)["workers"] == 0
    raw = broker.client.lrange(broker.keys.control("old:1"), 0, -1)
    assert raw == [b'{"type":"scale","workers":3}']  # no pool field for it to misread
    assert take_control("old:1", broker) == [Scale(workers=3)]


def test_a_busy_worker_of_a_paused_pool_finishes_its_job_then_claims_nothing(sup):
    r = start(sup, workers=1, tail=reports(1), reports=1)
    q = Queue("reports", r.broker)
    running = q.enqueue("examples.cpu:spin", 2.0)
    behind = q.enqueue("tests.jobfuncs:worker_pid")
    # Running, not only claimed: a pause that meets a claim in flight gives the job back.
    wait_until(lambda: f"busy examples.cpu:spin {running.id}" in titles(r), timeout=10,
               what="the first job running")
    send_control(ident(r), PausePool(pool="reports", paused=True), r.broker)
    wait_until(lambda: "control message: pause pool reports" in r.logs(), timeout=10)
    assert running.result(timeout=20) == 2.0
    # The job behind it came with the finished one's write; it goes back, attempt unspent.
    with pytest.raises(Exception, match="still queued"):
        behind.result(timeout=1.5)
    assert behind.refresh().attempts == 0
    send_control(ident(r), PausePool(pool="reports", paused=False), r.broker)
    assert behind.result(timeout=20) in by_pool(r)["reports"]
