"""The embedded server under a real supervisor: restarted after a crash, and a server
that cannot start again halts the supervisor with a clear reason."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from jobs import Broker, Queue
from tests.helpers import stop_process, wait_until

ROOT = Path(__file__).parent.parent


@pytest.fixture
def embedded(tmp_path):
    """A supervisor with no Redis URL (so with its own server), and its log."""
    data = tmp_path / "var"
    config = tmp_path / "config.toml"
    config.write_text(f'[supervisor]\ndata_dir = "{data}"\nworkers = 1\n\n'
                      '[worker]\nmodules = ["examples.cpu", "tests.jobfuncs"]\n')
    log = tmp_path / "supervisor.log"
    proc = subprocess.Popen([sys.executable, "-m", "supervisor", "--config", str(config), "run",
                             "--log-file", str(log)], cwd=ROOT)
    try:
        wait_until(lambda: "supervisor ready" in _read(log), timeout=30, what="ready")
        yield proc, data, log
    finally:
        stop_process(proc, grace=30)


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _servers(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    found = []
    for c in psutil.Process(proc.pid).children():
        try:
            if "valkey-server" in c.name() and c.status() != psutil.STATUS_ZOMBIE:
                found.append(c)
        except psutil.NoSuchProcess:
            pass
    return found


def test_a_crashed_embedded_server_is_restarted_and_work_goes_on(embedded):
    proc, data, log = embedded
    broker = Broker(f"unix://{data / 'valkey.sock'}")
    queue = Queue("default", broker)
    assert queue.enqueue("tests.jobfuncs:add", 1, 2).result(timeout=20) == 3
    [first] = _servers(proc)
    first.send_signal(signal.SIGKILL)
    wait_until(lambda: "restarting the embedded server" in _read(log), timeout=10, what="the restart")
    wait_until(lambda: [s for s in _servers(proc) if s.pid != first.pid], timeout=10,
               what="a new server")
    # The worker reconnects on its own, as after any outage.
    assert queue.enqueue("tests.jobfuncs:add", 2, 3).result(timeout=30) == 5
    assert proc.poll() is None


def test_an_embedded_server_that_cannot_start_again_halts_the_supervisor(embedded):
    proc, data, log = embedded
    [server] = _servers(proc)
    server.send_signal(signal.SIGSTOP)  # so nothing it writes mends the file below
    try:
        for aof in (data / "appendonlydir").glob("*.incr.aof"):
            with aof.open("ab") as f:
                f.write(b"not a command\r\n*3\r\n")
        server.send_signal(signal.SIGKILL)
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):  # reaped already, as a rule
            server.send_signal(signal.SIGCONT)
    assert proc.wait(60) == 4  # ExitCode.REDIS_UNAVAILABLE
    text = _read(log)
    assert "embedded valkey-server exited 5 times within 60 s" in text
    assert f"see {data.resolve()}/valkey.log" in text
