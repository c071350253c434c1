"""Debian's ``redis-server`` (built with TLS) on loopback ports, for TLS and Sentinel tests.

Each instance runs from a config file in its own temp dir, binds 127.0.0.1 only, keeps
no data on disk, and is stopped by its pid (``stop`` / ``kill``). Tests that need the
binary use ``needs_redis_server``: without it they skip and say how to install it.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import stop_process

BINARY = shutil.which("redis-server")
needs_redis_server = pytest.mark.skipif(
    BINARY is None,
    reason="Debian's redis-server (built with TLS) is not installed: "
           "`apt-get install redis-server` (.ci/run installs it when missing)",
)


def free_port() -> int:
    """A loopback port nothing listens on right now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process; ``lines`` are extra ``redis.conf`` directives."""

    def __init__(self, directory: Path, lines: list[str], *, port: int | None = None,
                 sentinel: bool = False, tls: bool = False) -> None:
        self.dir = directory
        self.port = port or free_port()
        self.sentinel = sentinel
        self.tls = tls  # then ``port`` is the TLS port and there is no plain one
        self.conf = directory / ("sentinel.conf" if sentinel else "redis.conf")
        self.log = directory / "server.log"
        self.lines = lines
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> RedisServer:
        assert BINARY is not None
        self.dir.mkdir(parents=True, exist_ok=True)
        ports = ["port 0", f"tls-port {self.port}"] if self.tls else [f"port {self.port}"]
        base = [*ports, f"dir {self.dir}", f"logfile {self.log}", "bind 127.0.0.1",
                "daemonize no"]
        if not self.sentinel:
            base += ["save \"\"", "appendonly no"]
        # Sentinel rewrites its config file: it must be a file of its own, writable.
        self.conf.write_text("\n".join([*base, *self.lines]) + "\n")
        cmd = [BINARY, str(self.conf)] + (["--sentinel"] if self.sentinel else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self._accepting():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.log.read_text() if self.log.exists() else ""
                self.stop()
                raise RuntimeError(f"redis-server did not start in {self.dir}:\n{log[-2000:]}")
            time.sleep(0.01)
        return self

    def _accepting(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crashed host would go: nothing flushed, no goodbye to replicas."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc)

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


class Servers:
    """Every server a test or module started, stopped together at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[RedisServer] = []

    def start(self, name: str, lines: list[str], **kw: object) -> RedisServer:
        server = RedisServer(self.root / name, lines, **kw)  # type: ignore[arg-type]
        self.started.append(server)
        return server.start()

    def stop_all(self) -> None:
        for server in reversed(self.started):
            server.stop()


class Certs:
    """A test CA, a server certificate for localhost (only), a client certificate,
    and a second CA that signed nothing of the server's: all made now, in ``directory``."""

    def __init__(self, directory: Path) -> None:
        import trustme

        directory.mkdir(parents=True, exist_ok=True)
        ca, stranger = trustme.CA(), trustme.CA()
        server = ca.issue_cert("localhost")  # not 127.0.0.1: a URL by IP fails the name check
        client = ca.issue_cert("jobvisor-client")
        foreign = stranger.issue_cert("jobvisor-client")
        self.ca = directory / "ca.pem"
        self.other_ca = directory / "other-ca.pem"
        self.server_cert = directory / "server.crt"
        self.server_key = directory / "server.key"
        self.client_cert = directory / "client.crt"
        self.client_key = directory / "client.key"
        self.foreign_cert = directory / "foreign.crt"
        self.foreign_key = directory / "foreign.key"
        ca.cert_pem.write_to_path(str(self.ca))
        stranger.cert_pem.write_to_path(str(self.other_ca))
        for issued, cert, key in ((server, self.server_cert, self.server_key),
                                  (client, self.client_cert, self.client_key),
                                  (foreign, self.foreign_cert, self.foreign_key)):
            issued.cert_chain_pems[0].write_to_path(str(cert))
            issued.private_key_pem.write_to_path(str(key))

    def server_lines(self, auth_clients: bool) -> list[str]:
        return [f"tls-cert-file {self.server_cert}", f"tls-key-file {self.server_key}",
                f"tls-ca-cert-file {self.ca}",
                f"tls-auth-clients {'yes' if auth_clients else 'no'}"]
