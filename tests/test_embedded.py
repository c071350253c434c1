"""The embedded server under a real supervisor: restarted after a crash, a server that
cannot start again halts the supervisor with a clear reason, the server dies with its
supervisor, and one left running by a supervisor that is gone is taken over."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from jobs import Broker, Queue
from supervisor.errors import ExitCode, HaltServer
from supervisor.integrations.embedded import EmbeddedServer
from tests.helpers import stop_process, wait_until

ROOT = Path(__file__).parent.parent


def _config(tmp_path: Path) -> Path:
    """A config with no Redis URL (so the supervisor starts its own server)."""
    config = tmp_path / "config.toml"
    config.write_text(f'[supervisor]\ndata_dir = "{tmp_path / "var"}"\nworkers = 1\n\n'
                      '[worker]\nmodules = ["examples.cpu", "tests.jobfuncs"]\n')
    return config


def _run(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "supervisor", "--config", str(config), "run",
                             "--log-file", str(log)], cwd=ROOT)


@pytest.fixture
def embedded(tmp_path):
    """A supervisor with its own server, its data directory and its log."""
    data = tmp_path / "var"
    log = tmp_path / "supervisor.log"
    proc = _run(_config(tmp_path), log)
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


def _gone(proc: psutil.Process) -> bool:
    """Exited; a zombie counts (its parent, not this test, reaps it)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_embedded_server_dies_with_a_killed_supervisor(embedded):
    proc, data, _log = embedded
    [server] = _servers(proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    try:
        wait_until(lambda: _gone(server), timeout=15, what="the server to exit")
    finally:
        if not _gone(server):
            server.kill()
    # SIGTERM from the parent-death signal: a clean shutdown that wrote its AOF.
    assert "Received SIGTERM" in _read(data / "valkey.log")
    assert not (data / "valkey.sock").exists()


@pytest.mark.parametrize("pidfile", [True, False], ids=["pidfile", "no-pidfile"])
def test_a_server_that_outlived_its_supervisor_is_taken_over_with_its_queue(tmp_path, pidfile):
    data = tmp_path / "var"
    flags = [] if pidfile else ["--no-pidfile"]
    out = subprocess.run([sys.executable, "-m", "tests.oldserver", str(data), *flags],
                         cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    old = psutil.Process(int(out.stdout))
    proc = None
    try:
        queue = Queue("default", Broker(f"unix://{data / 'valkey.sock'}"))
        wait_until(lambda: (data / "valkey.sock").exists(), timeout=15, what="the old server")
        handles = [queue.enqueue("tests.jobfuncs:add", i, i) for i in range(5)]
        assert queue.broker.client.zcard(queue.broker.keys.state_index("default", "queued")) == 5
        log = tmp_path / "supervisor.log"
        proc = _run(_config(tmp_path), log)
        wait_until(lambda: "supervisor ready" in _read(log) or proc.poll() is not None,
                   timeout=30, what="ready")
        assert proc.poll() is None, _read(log)
        assert f"embedded valkey-server {old.pid} on {data.resolve() / 'valkey.sock'} " \
               "outlived its supervisor" in _read(log)
        assert _gone(old)
        [server] = _servers(proc)
        assert server.pid != old.pid
        # The new server loaded the old one's AOF: the jobs queued there all run.
        assert [h.result(timeout=30) for h in handles] == [0, 2, 4, 6, 8]
    finally:
        stop_process(proc, grace=30)
        if not _gone(old):
            old.kill()


def test_a_second_supervisor_on_a_data_dir_in_use_is_refused(embedded, tmp_path):
    proc, data, _log = embedded
    [server] = _servers(proc)

    def second() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "supervisor", "--config",
                               str(tmp_path / "config.toml"), "run"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    for _ in range(2):  # by its pid file; then by the server's parent, as while it boots
        done = second()
        assert done.returncode == ExitCode.CONFIG_ERROR
        assert f"supervisor {proc.pid} is running on {data.resolve()}" in done.stderr
        assert f"kill -TERM {proc.pid}" in done.stderr
        (data / "jobvisor.pid").unlink(missing_ok=True)
    assert not _gone(server) and proc.poll() is None
    queue = Queue("default", Broker(f"unix://{data / 'valkey.sock'}"))
    assert queue.enqueue("tests.jobfuncs:add", 1, 2).result(timeout=20) == 3


def test_a_socket_something_else_answers_on_is_refused(tmp_path):
    data = tmp_path / "var"
    data.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(data / "valkey.sock"))
        other.listen()
        server = EmbeddedServer(data)
        with pytest.raises(HaltServer) as refused:
            server.launch()
    assert server.proc is None
    assert refused.value.code == ExitCode.CONFIG_ERROR
    assert "it is not a jobvisor embedded valkey-server of this user" in refused.value.reason
