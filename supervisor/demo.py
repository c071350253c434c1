"""``jobvisor demo``: a supervisor on a private embedded server, a mix of example jobs,
a live line of counts while they run, and a summary of what happened."""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobs import Broker, Job, JobState, Priority, Queue, RedisSettings
from jobs.connection import embedded_url

DEMO_CONFIG = """\
[supervisor]
data_dir = "{data_dir}"
workers = 2
graceful_timeout = 5.0

[worker]
modules = ["examples.cpu"]
queues = ["default"]
"""


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
    out = [q.options(priority=levels[i % 4]).enqueue("examples.cpu:count_primes", 150_000 + i)
           for i in range(n)]
    out += [q.options(priority=Priority.HIGH).enqueue("examples.cpu:mandelbrot", 60, 40)
            for _ in range(4)]
    out += [q.options(delay=2.0).enqueue("examples.cpu:hash_chain", 20_000) for _ in range(3)]
    out.append(q.enqueue("examples.cpu:runaway"))
    out.append(q.enqueue("examples.cpu:flaky", 1, f"demo-{os.getpid()}"))
    out.append(q.enqueue("examples.cpu:crash"))
    return out


def run_demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="jobvisor-demo-") as tmp:
        data_dir = Path(tmp) / "var"
        config = Path(tmp) / "config.toml"
        config.write_text(DEMO_CONFIG.format(data_dir=data_dir))
        print(f"starting a supervisor with 2 workers (data in {data_dir})")
        proc = subprocess.Popen([sys.executable, "-m", "supervisor", "--config", str(config),
                                 "run", "--log-file", str(Path(tmp) / "supervisor.log")])
        broker = Broker(embedded_url(data_dir), redis_settings=RedisSettings())
        try:
            _wait_ready(broker, proc)
            started = time.monotonic()
            jobs_ = _enqueue(Queue("default", broker), args.jobs)
            print(f"enqueued {len(jobs_)} jobs: prime counting at every priority, Mandelbrot, "
                  "delayed hashing, one runaway loop, one flaky job, one crashing job")
            _follow(jobs_, timeout=120)
            elapsed = time.monotonic() - started
            _summary(jobs_, elapsed)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return 0


def _follow(jobs_: list[Job], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = collections.Counter(j.refresh().state.value for j in jobs_)
        line = "  ".join(f"{s}={states.get(s, 0)}" for s in
                         ("queued", "scheduled", "active", "completed", "dead"))
        print(f"\r{line}   ", end="", flush=True)
        if all(JobState(s).is_final for s in states):
            print()
            return
        time.sleep(0.25)
    print("\njobvisor demo: some jobs did not finish in time")


def _summary(jobs_: list[Job], elapsed: float) -> None:
    outcomes = collections.Counter(j.state.value for j in jobs_)
    by_priority = collections.Counter(Priority(j.priority).name for j in jobs_
                                      if j.function.endswith("count_primes"))
    done = outcomes.get("completed", 0)
    print("\nsummary")
    print(f"  outcomes:      {dict(outcomes)}")
    print(f"  prime jobs by priority: {dict(by_priority)}")
    print(f"  throughput:    {done / elapsed:.1f} completed jobs/s over {elapsed:.1f} s")
    for j in jobs_:
        for e in j.errors:
            print(f"  {j.function:26} attempt {e.attempt}: {e.type}: {e.message}")
