"""Cluster failover: the primary serving a namespace's slot is SIGKILLed mid-load.

A real cluster on loopback (3 primaries, 3 replicas, ``cluster-node-timeout`` 1 s). A
supervisor and a producer reach it through ``redis+cluster://``; the primary that
serves the namespace's slot is killed while jobs run; its replica is promoted by the
cluster itself, and the clients find it (they ask the cluster again when a connection
breaks or a reply says the slot moved), without a restart.

As with Sentinel (``tests/test_sentinel.py``), replication is asynchronous: jobs whose
enqueue had reached the replica before the kill must all end ``completed``, exactly once
in the ledger unless a recorded crash or lease expiry explains more; an enqueue the old
primary acknowledged but never sent may be gone (measured and printed, not asserted).
The ledger is on the session's standalone server, which the failover never touches.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from jobs import Broker, Queue, RedisSettings
from jobs.store.slot_owner import namespace_slot
from tests.cluster import ValkeyCluster
from tests.failover import Producer, wind_down_and_audit
from tests.helpers import wait_until
from tests.procs import Running
from tests.test_sentinel import FUNCTION


@pytest.fixture
def valkey_cluster(tmp_path: Path):
    c = ValkeyCluster(tmp_path / "cluster")
    c.start()
    yield c
    c.stop()


def _offset(node, field: str) -> int:  # type: ignore[no-untyped-def]
    return int(node.info("replication").get(field, 0))


@pytest.mark.timeout(120)
def test_the_primary_of_a_namespace_dies_mid_load_and_no_replicated_job_is_lost(
        valkey_cluster, server, namespace, tmp_path):
    began = time.monotonic()
    ledger = redis.Redis(unix_socket_path=str(server.socket))
    key = f"{namespace}:ledger"
    args = (server.url, key, 8.0)
    broker = Broker(valkey_cluster.url, redis_settings=RedisSettings(namespace=namespace))
    queue = Queue("default", broker)
    slot = namespace_slot(namespace)
    primary = valkey_cluster.owner(slot)
    replica = valkey_cluster.replica_of(primary)

    # 1. Jobs whose enqueue reached the replica before anything happens.
    first = [j.id for j in queue.enqueue_many([(FUNCTION, *args)] * 300)]
    offset = _offset(primary, "master_repl_offset")
    wait_until(lambda: _offset(replica, "slave_repl_offset") >= offset, timeout=10,
               what="the first jobs to replicate")

    (tmp_path / "sup").mkdir()
    sup = Running(tmp_path / "sup", SimpleNamespace(url=valkey_cluster.url), namespace,
                  workers=2, modules='["tests.test_sentinel"]')
    try:
        sup.wait_workers(2)
        producer = Producer(broker, (FUNCTION, *args))
        producer.start()
        wait_until(lambda: broker.jobs.counts("default", ["completed"])["completed"] >= 100,
                   timeout=30, what="a third of the first jobs to complete")

        # 2. The primary serving the namespace dies mid-run.
        before = broker.jobs.counts("default", ["completed"])["completed"]
        lag = _offset(primary, "master_repl_offset") - _offset(replica, "slave_repl_offset")
        valkey_cluster.kill(primary)
        killed = time.monotonic()
        wait_until(lambda: valkey_cluster.owner(slot) is replica, timeout=30, interval=0.05,
                   what="the cluster to promote the replica")
        promoted = time.monotonic()
        after = broker.jobs.counts("default", ["completed"])["completed"]
        wait_until(lambda: broker.jobs.counts("default", ["completed"])["completed"] > after + 10,
                   timeout=30, what="workers to complete jobs on the new primary")
        resumed = time.monotonic()
        # 3. Work enqueued after the failover, and the audit of every job.
        a = wind_down_and_audit(broker, producer, first, (FUNCTION, *args), ledger, key, 60)
        acked, lost, expected = a.acked, a.lost, a.expected
        states, runs, attempts = a.states, a.runs, a.attempts
        logs = sup.logs()

        assert states == Counter({"completed": len(expected)}), states
        assert all(runs.get(j, 0) >= 1 for j in expected), "a completed job never ran"
        # A job ran more than once only with an attempt recorded for it (a crash or a
        # lease that expired), or when the failover rolled back its completion.
        duplicates = {j: n for j, n in runs.items() if n > 1}
        rolled_back = max(0, before - after)
        unexplained = [j for j, n in duplicates.items()
                       if n > int(broker.jobs.fetch_many([j])[0].get(b"att", 0) or 0)]
        assert len(unexplained) <= rolled_back, (unexplained, rolled_back)
        assert sup.proc.poll() is None, "the supervisor stopped"
        assert {c.pid for c in sup.children()} and "Traceback" not in logs
        # Lost enqueues were acknowledged by the old primary, never by the new one.
        assert all(t < promoted for j, t in producer.acked if j in lost)

        report = {
            "jobs": len(expected), "enqueues_acked_during_run": len(acked),
            "acked_enqueues_lost": len(lost), "producer_errors": dict(producer.errors),
            "replica_lag_bytes_at_kill": lag, "completions_rolled_back": rolled_back,
            "jobs_run_twice_or_more": len(duplicates),
            "attempts_histogram": dict(sorted(attempts.items())),
            "reclaimed_after_lease": logs.count("reclaimed after its lease expired"),
            "kill_to_promotion_s": round(promoted - killed, 2),
            "kill_to_work_resumed_s": round(resumed - killed, 2),
            "wall_s": round(time.monotonic() - began, 1),
        }
        print(f"\ncluster failover figures: {report}")
    finally:
        sup.stop()
        ledger.delete(f"{key}:runs")
        ledger.close()
        broker.client.close()
