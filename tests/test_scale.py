"""Scaling a running supervisor: the effective maximum, `jobvisor scale` refusals and
replies, and a newer request superseding a scale-up in progress."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from jobs.cluster import Scale, send_control
from jobs.events import recent_events
from supervisor.runtime.scaling import derived_limit, machine
from tests.helpers import wait_until
from tests.procs import CONFIG, Running
from tests.procs import start_and_wait as _start

ROOT = Path(__file__).parent.parent


def cli(r: Running, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor", "--config", str(r.config), *args],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)


def ident(r: Running) -> str:
    return f"{socket.gethostname()}:{r.proc.pid}"


def published(r: Running, workers: int) -> dict:
    """The supervisor's registry entry, once it shows ``workers`` workers."""
    key = r.broker.keys.supervisor(ident(r))

    def entry() -> dict | None:
        raw = r.broker.client.get(key)
        e = json.loads(raw) if raw else None
        return e if e and len(e["workers"]) == workers else None

    return wait_until(entry, timeout=10, what=f"an entry with {workers} workers")


def test_scale_above_the_configured_max_is_refused_and_nothing_sent(sup):
    r = _start(sup, extra="max_workers = 4")
    published(r, 2)
    bad = cli(r, "scale", "5")
    assert bad.returncode == 1, bad.stdout
    assert (f"scale 5 refused: {ident(r)} runs at most 4 workers (supervisor.max_workers); "
            "raise supervisor.max_workers in its config.toml and reload it") in bad.stderr
    ok = cli(r, "scale", "3")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"asked {ident(r)} to run 3 workers (now 2)"
    [audit] = [e for e in recent_events(r.broker, 50) if e["e"] == "action"]
    assert audit["who"].startswith("cli:") and (
        audit["action"], audit["count"], audit["scope"]) == ("scale", "3", ident(r))
    r.wait_workers(3)
    # Messages are taken in the order sent: had the refused one gone out, it would show.
    wait_until(lambda: "control message: scale to 3 workers (was 2)" in r.logs(), timeout=10)
    assert r.logs().count("control message") == 1


def test_scale_above_the_derived_max_says_where_it_comes_from(sup):
    r = _start(sup)
    published(r, 2)
    most = derived_limit(machine()).workers
    assert f"; at most {most} workers (derived from {os.cpu_count()} cores" in r.logs()
    bad = cli(r, "scale", "100000")
    assert bad.returncode == 1
    assert f"runs at most {most} workers (derived from {os.cpu_count()} cores x 4" in bad.stderr
    assert "set supervisor.max_workers in its config.toml and reload it to allow more" in (
        bad.stderr)
    assert len(r.workers()) == 2 and "control message" not in r.logs()


def test_scale_of_a_supervisor_that_is_not_live_is_refused(sup):
    r = _start(sup)
    out = cli(r, "scale", "2", "--host", "no-such-host:1")
    assert out.returncode == 1
    assert "supervisor no-such-host:1 is not live" in out.stderr
    assert r.broker.client.exists(r.broker.keys.control("no-such-host:1")) == 0


def test_the_supervisor_refuses_a_scale_above_its_max_on_receipt(sup):
    """A request that passed the CLI's check before a reload lowered the maximum."""
    r = _start(sup, extra="max_workers = 3")
    send_control(ident(r), Scale(workers=50), r.broker)
    send_control(ident(r), Scale(workers=3), r.broker)
    r.wait_workers(3)
    wait_until(lambda: "scale to 3 workers (was 2)" in r.logs(), timeout=10)
    assert ("control message: scale to 50 workers refused: at most 3 workers "
            "(supervisor.max_workers)") in r.logs()


def test_sigttin_stops_at_the_max(sup):
    r = _start(sup, extra="max_workers = 2")
    r.proc.send_signal(signal.SIGTTIN)
    wait_until(lambda: "SIGTTIN: staying at 2 workers, the maximum (supervisor.max_workers)"
               in r.logs(), timeout=10)
    r.proc.send_signal(signal.SIGTTOU)
    r.wait_workers(1)
    assert r.logs().count("started (slot") == 2


def test_a_newer_scale_request_supersedes_one_in_progress(sup):
    r = _start(sup, extra="max_workers = 40")
    send_control(ident(r), Scale(workers=40), r.broker)
    wait_until(lambda: len(r.workers()) > 2, timeout=20, what="the scale-up to begin")
    send_control(ident(r), Scale(workers=2), r.broker)
    wait_until(lambda: "scale to 2 workers" in r.logs(), timeout=10)
    r.wait_workers(2)
    started = r.logs().count("started (slot")
    assert started < 40, f"the pool reached 40 before the newer request: {started} started"
    assert published(r, 2)["target"] == 2


def test_workers_above_the_derived_max_is_a_config_error(tmp_path, server, namespace):
    most = derived_limit(machine()).workers
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(url=server.url, ns=namespace, data=tmp_path / "var",
                                    workers=most + 1, graceful=10.0, lease=3.0,
                                    modules='["examples.cpu"]', sup_extra="", tail=""))
    out = subprocess.run([sys.executable, "-m", "supervisor", "--config", str(config), "run"],
                         capture_output=True, text=True, timeout=20, cwd=ROOT)
    assert out.returncode == 2
    assert (f"supervisor.workers = {most + 1} is above the {most} workers this host allows "
            f"(derived from {os.cpu_count()} cores") in out.stderr
    assert "set supervisor.max_workers" in out.stderr
