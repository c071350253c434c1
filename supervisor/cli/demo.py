"""``jobvisor demo``: a supervisor on a private embedded server, a mix of example jobs,
the live ``top`` view while they run, and a summary of what happened."""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from jobs import Broker, Job, JobState, Priority, Queue, RedisSettings
from jobs.stats import queue_stats
from jobs.store.urls import embedded_url
from supervisor.cli.top import render

DEMO_CONFIG = """\
[supervisor]
data_dir = "{data_dir}"
workers = 2
graceful_timeout = 5.0

[worker]
modules = ["examples.cpu"]
queues = ["default"]
"""


def _free_bind(preferred: int = 9181) -> str:
    """127.0.0.1:9181, or another free loopback port when that one is taken."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return f"127.0.0.1:{s.getsockname()[1]}"
    raise SystemExit("jobvisor demo: no free loopback port for the dashboard")


def _start_dashboard(config: Path, tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    bind = _free_bind()
    log = open(Path(tmp) / "dashboard.log", "wb")  # noqa: SIM115 - the process writes it
    proc = subprocess.Popen([sys.executable, "-m", "supervisor", "--config", str(config),
                             "dashboard", "--bind", bind], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc, f"http://{bind}/"


def _dashboard_answers(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "healthz", timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_ready(broker: Broker, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            broker.ping()
            return
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("jobvisor demo: the supervisor did not start") from None
            time.sleep(0.05)


def _enqueue(q: Queue, n: int) -> list[Job]:
    levels = list(Priority)
    out = [q.options(priority=levels[i % 4]).enqueue("examples.cpu:count_primes", 300_000 + i)
           for i in range(n)]
    out += [q.options(priority=Priority.HIGH).enqueue("examples.cpu:mandelbrot", 60, 40)
            for _ in range(4)]
    out += [q.options(delay=2.0).enqueue("examples.cpu:hash_chain", 20_000) for _ in range(3)]
    out.append(q.enqueue("examples.cpu:runaway"))
    out.append(q.enqueue("examples.cpu:flaky", 1, f"demo-{os.getpid()}"))
    out.append(q.enqueue("examples.cpu:crash"))
    return out


def _progress_line(jobs_: list[Job]) -> Text:
    states = collections.Counter(j.refresh().state.value for j in jobs_)
    return Text("  ".join(f"{s}={states.get(s, 0)}" for s in
                          ("queued", "scheduled", "active", "completed", "dead")))


def _all_done(broker: Broker, jobs_: list[Job]) -> bool:
    """Every job is final and the queue's counters show every completion (a worker
    writes its counts a moment after its last job), so the final view adds up."""
    if not all(j.state.is_final for j in jobs_):
        return False
    completed = sum(1 for j in jobs_ if j.state is JobState.COMPLETED)
    return sum(s.last_minute["completed"] for s in queue_stats(broker)) >= completed


def _follow(console: Console, broker: Broker, jobs_: list[Job], timeout: float) -> None:
    """The live top view on a terminal; a line of counts per second when piped."""
    deadline = time.monotonic() + timeout
    if console.is_terminal:
        with Live(console=console, auto_refresh=False) as view:
            while time.monotonic() < deadline:
                done = _all_done(broker, jobs_)
                view.update(Group(render(broker), _progress_line(jobs_)), refresh=True)
                if done:
                    return
                time.sleep(0.5)
        return
    while time.monotonic() < deadline:
        console.print(_progress_line(jobs_))
        if _all_done(broker, jobs_):
            break
        time.sleep(1.0)
    console.print(render(broker))


def _summary(console: Console, jobs_: list[Job], elapsed: float) -> None:
    outcomes = collections.Counter(j.state.value for j in jobs_)
    done = outcomes.get("completed", 0)
    console.print(f"\nsummary: {dict(outcomes)}, {done / elapsed:.1f} completed jobs/s "
                  f"over {elapsed:.1f} s")
    prio = Table(title="prime counting by priority (higher runs first)")
    for col in ("priority", "jobs", "mean wait before start"):
        prio.add_column(col)
    by_level: dict[str, list[float]] = collections.defaultdict(list)
    for j in jobs_:
        if j.function.endswith("count_primes") and j.started_at and j.enqueued_at:
            by_level[Priority(j.priority).name].append(
                (j.started_at - j.enqueued_at).total_seconds())
    for level in ("CRITICAL", "HIGH", "NORMAL", "LOW"):
        waits = by_level.get(level, [])
        if waits:
            prio.add_row(level, str(len(waits)), f"{sum(waits) / len(waits):.2f} s")
    console.print(prio)
    reasons = Table(title="kills, crashes and retries")
    for col in ("job", "attempt", "what happened", "then"):
        reasons.add_column(col)
    for j in jobs_:
        for e in j.errors:
            then = "dead" if e is j.errors[-1] and j.state.value == "dead" else "retried"
            reasons.add_row(j.function, str(e.attempt), f"{e.type}: {e.message}", then)
    console.print(reasons)


def run_demo(args: argparse.Namespace) -> int:
    console = Console() if sys.stdout.isatty() else Console(width=140)
    with tempfile.TemporaryDirectory(prefix="jobvisor-demo-") as tmp:
        data_dir = Path(tmp) / "var"
        config = Path(tmp) / "config.toml"
        config.write_text(DEMO_CONFIG.format(data_dir=data_dir))
        console.print(f"starting a supervisor with 2 workers (embedded server in {data_dir})")
        proc = subprocess.Popen([sys.executable, "-m", "supervisor", "--config", str(config),
                                 "run", "--log-file", str(Path(tmp) / "supervisor.log")])
        broker = Broker(embedded_url(data_dir), redis_settings=RedisSettings())
        dashboard: subprocess.Popen[bytes] | None = None
        try:
            _wait_ready(broker, proc)
            dashboard, url = _start_dashboard(config, tmp)
            if _dashboard_answers(url, dashboard):
                console.print(f"dashboard: {url}  (open it to watch the jobs live)")
            else:
                console.print(f"the dashboard did not start; see {tmp}/dashboard.log")
            started = time.monotonic()
            jobs_ = _enqueue(Queue("default", broker), args.jobs)
            console.print(f"enqueued {len(jobs_)} jobs: prime counting at every priority, "
                          "Mandelbrot, delayed hashing, one runaway loop (hard timeout 1 s), "
                          "one flaky job (retries), one job that crashes its worker")
            _follow(console, broker, jobs_, timeout=120)
            _summary(console, jobs_, time.monotonic() - started)
            if args.keep and dashboard is not None and dashboard.poll() is None:
                console.print(f"\nthe supervisor and the dashboard keep running: {url}\n"
                              "enqueue more with JOBVISOR_CONFIG="
                              f"{config} jobvisor enqueue ...; Ctrl-C stops them")
                with contextlib.suppress(KeyboardInterrupt):
                    dashboard.wait()
        finally:
            for running in (dashboard, proc):
                if running is not None:
                    _stop(running)
    return 0
