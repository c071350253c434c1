"""Sentinel: a supervisor follows the primary through a failover.

A primary, a replica and one sentinel (quorum 1) run on loopback ports (Debian's
redis-server; Sentinel is the same binary with ``--sentinel``). A supervisor and a
producer reach them through ``redis+sentinel://``. Mid-run the primary is SIGKILLed;
the sentinel promotes the replica and the clients reconnect to it.

What replication guarantees, and so what is asserted: a write the replica had received
before the kill survives it. Jobs whose enqueue had replicated all end ``completed``.
What it does not guarantee (replication is asynchronous): a write the old primary
acknowledged but had not yet sent to the replica is gone. That can lose an enqueue the
producer saw succeed, roll a completed job back to ``active`` (or ``queued``), so it
runs again, or undo a claim. Those figures are measured and printed, not asserted.

The job module of these supervisors is this file: ``mark`` counts each execution in a
ledger on the session Valkey server, which the failover never touches.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

import jobs
from jobs import Backoff, Broker, Queue, RedisSettings, job
from jobs.store.sentinel import parse_sentinel_url
from jobs.store.urls import redact
from supervisor.runtime.connections import SUPERVISOR_POOL, WORKER_POOL
from tests.debian_redis import Servers, needs_redis_server
from tests.failover import Producer, wind_down_and_audit
from tests.helpers import wait_until
from tests.procs import Running

FUNCTION = "tests.test_sentinel:mark"
SERVICE = "jobvisor-test"
_ledgers: dict[tuple[int, str], redis.Redis] = {}


@job(max_attempts=20, backoff=Backoff(kind="fixed", base=0.0, jitter=0.0))
def mark(ledger_url: str, key: str, work_ms: float) -> int:
    """Busy ``work_ms``, then count this execution of the job in the ledger."""
    end = time.perf_counter() + work_ms / 1000.0
    while time.perf_counter() < end:
        pass
    ledger = _ledgers.get((os.getpid(), ledger_url))
    if ledger is None:  # one connection per process: children never reuse the parent's
        ledger = _ledgers[(os.getpid(), ledger_url)] = redis.Redis.from_url(ledger_url)
    ctx = jobs.current()
    ledger.hincrby(f"{key}:runs", ctx.job_id, 1)
    return ctx.attempt


def test_sentinel_url_form_and_redaction():
    t = parse_sentinel_url("redis+sentinel://app:s%2Fcret@10.0.0.1,10.0.0.2:26380/orders/2")
    assert t.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert (t.service, t.db, t.username, t.password) == ("orders", 2, "app", "s/cret")
    shown = redact("redis+sentinel://app:s%2Fcret@10.0.0.1,10.0.0.2:26380/orders/2")
    assert shown == "redis+sentinel://app:***@10.0.0.1,10.0.0.2:26380/orders/2"
    assert redact("rediss+sentinel://:pw@h:1/s") == "rediss+sentinel://:***@h:1/s"
    for bad, why in (("redis+sentinel://h:26379/", "names no service"),
                     ("redis+sentinel://h:x/s", "not host[:port]"),
                     ("redis+sentinel://:pw@h/s?sentinel_password=pw", "no query parameters")):
        with pytest.raises(jobs.ConfigurationError, match="Sentinel URL") as info:
            Broker(bad)
        assert why in str(info.value) and "pw" not in str(info.value)


def _replication(client: redis.Redis) -> dict:
    return client.info("replication")


@pytest.fixture
def cluster(tmp_path: Path):
    """Primary, replica and sentinel, each on a free loopback port; always stopped."""
    servers = Servers(tmp_path / "servers")
    try:
        primary = servers.start("primary", ["repl-diskless-sync-delay 0"])
        replica = servers.start("replica", [f"replicaof 127.0.0.1 {primary.port}"])
        replica_client = redis.Redis(port=replica.port)
        wait_until(lambda: _replication(replica_client).get("master_link_status") == "up",
                   timeout=10, what="the replica to sync")
        # Started after the replica is in sync, so its first look at the primary
        # already lists the replica it may have to promote.
        sentinel = servers.start("sentinel", [
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 1",
            f"sentinel down-after-milliseconds {SERVICE} 1000",
            f"sentinel failover-timeout {SERVICE} 10000",
        ], sentinel=True)
        sentinel_client = redis.Redis(port=sentinel.port, decode_responses=True)

        def replica_known() -> bool:
            rows = sentinel_client.execute_command("SENTINEL", "REPLICAS", SERVICE)
            # Parsed into dicts by newer redis-py releases, flat lists by older ones.
            rows = [r if isinstance(r, dict) else dict(zip(r[::2], r[1::2], strict=True))
                    for r in rows]
            return any(r.get("flags") == "slave" and int(r.get("port")) == replica.port
                       for r in rows)

        wait_until(replica_known, timeout=15, what="the sentinel to know the replica")
        yield SimpleNamespace(primary=primary, replica=replica, sentinel=sentinel,
                              sentinel_client=sentinel_client, replica_client=replica_client,
                              url=f"redis+sentinel://127.0.0.1:{sentinel.port}/{SERVICE}")
        replica_client.close()
        sentinel_client.close()
    finally:
        servers.stop_all()


@needs_redis_server
@pytest.mark.timeout(90)
def test_failover_mid_run(cluster, server, namespace, tmp_path):
    began = time.monotonic()
    ledger = redis.Redis(unix_socket_path=str(server.socket))
    key = f"{namespace}:ledger"
    args = (server.url, key, 8.0)
    broker = Broker(cluster.url, redis_settings=RedisSettings(namespace=namespace))
    queue = Queue("default", broker)
    primary_client = redis.Redis(port=cluster.primary.port)

    # 1. Jobs whose enqueue reached the replica before anything happens.
    first = [j.id for j in queue.enqueue_many([(FUNCTION, *args)] * 300)]
    offset = _replication(primary_client)["master_repl_offset"]
    wait_until(lambda: _replication(cluster.replica_client)["slave_repl_offset"] >= offset,
               timeout=10, what="the first jobs to replicate")

    (tmp_path / "sup").mkdir()
    sup = Running(tmp_path / "sup", SimpleNamespace(url=cluster.url), namespace, workers=2,
                  modules='["tests.test_sentinel"]')
    try:
        sup.wait_workers(2)
        producer = Producer(broker, (FUNCTION, *args))
        producer.start()
        wait_until(lambda: broker.jobs.counts("default", ["completed"])["completed"] >= 100,
                   timeout=30, what="a third of the first jobs to complete")

        # 2. The primary dies mid-run.
        at_kill = broker.jobs.counts("default", ["completed", "active"])
        before = at_kill["completed"]
        lag = (_replication(primary_client)["master_repl_offset"]
               - _replication(cluster.replica_client)["slave_repl_offset"])
        cluster.primary.kill()
        killed = time.monotonic()
        promoted_to = wait_until(
            lambda: int(cluster.sentinel_client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)[1]) == cluster.replica.port,
            timeout=20, interval=0.02, what="the sentinel to promote the replica")
        promoted = time.monotonic()
        assert promoted_to
        after = broker.jobs.counts("default", ["completed"])["completed"]
        wait_until(lambda: broker.jobs.counts("default", ["completed"])["completed"] > after + 10,
                   timeout=20, what="workers to complete jobs on the new primary")
        resumed = time.monotonic()
        # On the new primary each process keeps its bound: the connections that had
        # reached the old one reopened here, and no more.
        ours = {sup.proc.pid, *(c.pid for c in sup.children())}

        def all_here() -> Counter[str] | None:
            held = Counter(c["name"] for c in cluster.replica_client.client_list()
                           if c["name"].startswith(("jobvisor:supervisor:", "jobvisor:worker:"))
                           and int(c["name"].rsplit(":", 1)[1]) in ours)
            roles = Counter(n.split(":")[1] for n in held)
            return held if roles == {"supervisor": 1, "worker": 2} else None

        # Each worker reconnects at its own next call (a backoff may still delay one).
        held = wait_until(all_here, timeout=20,
                          what="the supervisor and both workers on the new primary")
        for name, count in held.items():
            assert count <= (WORKER_POOL if ":worker:" in name else SUPERVISOR_POOL) + 1, held
        # 3. Work enqueued after the failover, and the audit of every job.
        a = wind_down_and_audit(broker, producer, first, (FUNCTION, *args), ledger, key, 40)
        acked, lost, expected = a.acked, a.lost, a.expected
        states, runs, attempts = a.states, a.runs, a.attempts
        lost_before_kill = [j for j, t in producer.acked if t < killed and j in lost]

        assert states == Counter({"completed": len(expected)}), states
        assert all(runs.get(j, 0) >= 1 for j in expected), "a completed job never ran"
        assert sup.proc.poll() is None, "the supervisor stopped"
        assert {c.pid for c in sup.children()} and "Traceback" not in sup.logs()
        # Lost enqueues were acknowledged by the old primary, never by the new one.
        assert all(t < promoted for j, t in producer.acked if j in set(lost))

        duplicates = {j: n for j, n in runs.items() if n > 1}
        report = {
            "jobs": len(expected), "enqueues_acked_during_failover": len(acked),
            "acked_enqueues_lost": len(lost), "of_them_acked_before_kill": len(lost_before_kill),
            "producer_errors": dict(producer.errors),
            "active_at_kill": at_kill["active"], "replica_lag_bytes_at_kill": lag, "completed_seen_before_kill": before, "completed_after_promotion": after,
            "completions_rolled_back": max(0, before - after),
            "jobs_run_twice_or_more": len(duplicates),
            "extra_executions": sum(n - 1 for n in duplicates.values()),
            "attempts_histogram": dict(sorted(attempts.items())),
            "reclaimed_after_lease": sup.logs().count("reclaimed after its lease expired"),
            "kill_to_promotion_s": round(promoted - killed, 2),
            "kill_to_work_resumed_s": round(resumed - killed, 2),
            "wall_s": round(time.monotonic() - began, 1),
        }
        print(f"\nsentinel failover figures: {report}")
    finally:
        sup.stop()
        primary_client.close()
        ledger.delete(f"{key}:runs")
        ledger.close()
        broker.client.close()
