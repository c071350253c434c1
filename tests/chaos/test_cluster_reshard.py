"""Cluster resharding: a namespace's slot moves to another primary mid-load.

Valkey 9's atomic slot migration (``CLUSTER MIGRATESLOTS``) copies the whole slot to
its new primary while the old one keeps serving every key of it, then hands the slot
over at once: no script ever finds part of a namespace moved. A supervisor and a
producer reach the cluster through ``redis+cluster://`` and follow the slot (a reply
that says it moved is retried against its new primary), without a restart. Nothing is
lost (no replica, no failover: every acknowledged enqueue is there), and a job runs
twice only with an attempt recorded for it.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from jobs import Broker, Queue, RedisSettings
from jobs.health import check_health
from jobs.store.slot_owner import namespace_slot
from tests.cluster import ValkeyCluster
from tests.failover import Producer, wind_down_and_audit
from tests.helpers import wait_until
from tests.procs import Running
from tests.test_sentinel import FUNCTION


@pytest.fixture
def two_primaries(tmp_path: Path):
    c = ValkeyCluster(tmp_path / "cluster", primaries=2, replicas=0)
    c.start()
    yield c
    c.stop()


@pytest.mark.timeout(120)
def test_a_namespace_slot_moved_away_and_back_mid_load_loses_nothing(two_primaries, server, namespace,
                                                       tmp_path):
    cluster = two_primaries
    began = time.monotonic()
    ledger = redis.Redis(unix_socket_path=str(server.socket))
    key = f"{namespace}:ledger"
    args = (server.url, key, 8.0)
    broker = Broker(cluster.url, redis_settings=RedisSettings(namespace=namespace))
    queue = Queue("default", broker)
    slot = namespace_slot(namespace)
    home = cluster.owner(slot)
    away = next(n for n in cluster.nodes if n is not home)

    first = [j.id for j in queue.enqueue_many([(FUNCTION, *args)] * 300)]
    (tmp_path / "sup").mkdir()
    sup = Running(tmp_path / "sup", SimpleNamespace(url=cluster.url), namespace,
                  workers=2, modules='["tests.test_sentinel"]')
    try:
        sup.wait_workers(2)
        producer = Producer(broker, (FUNCTION, *args))
        producer.start()
        wait_until(lambda: broker.jobs.counts("default", ["completed"])["completed"] >= 100,
                   timeout=30, what="a third of the first jobs to complete")
        # A job that runs across both moves: its lease is renewed (every lease/3) on
        # one primary, then on the other, then back, and it still completes once.
        long_job = queue.enqueue(FUNCTION, server.url, key, 2500.0)
        wait_until(lambda: long_job.refresh().state.value == "active", timeout=30,
                   what="the long job to start")

        # The slot moves away and back while workers claim, finish and renew and the
        # producer enqueues.
        moves = []
        for source, target in ((home, away), (away, home)):
            asked = time.monotonic()
            source.client.execute_command("CLUSTER", "MIGRATESLOTS", "SLOTSRANGE", slot, slot,
                                          "NODE", target.id)
            wait_until(lambda t=target: cluster.owner(slot) is t, timeout=30, interval=0.02,
                       what="the slot to be served by its new primary")
            moved = time.monotonic()
            after = broker.jobs.counts("default", ["completed"])["completed"]
            wait_until(lambda n=after: broker.jobs.counts(
                "default", ["completed"])["completed"] > n + 10, timeout=30,
                       what="workers to complete jobs on the new primary")
            moves.append({"asked_to_moved_s": round(moved - asked, 2),
                          "moved_to_work_resumed_s": round(time.monotonic() - moved, 2)})
            assert not source.client.keys(f"{{{namespace}}}*"), "keys left behind"
            [redis_check] = [c for c in check_health(broker).checks if c.name == "redis"]
            assert redis_check.detail.endswith(f"is on 127.0.0.1:{target.port}"), redis_check
        assert long_job.refresh().state.value == "active", "the long job ended before the moves"
        a = wind_down_and_audit(broker, producer, [*first, long_job.id], (FUNCTION, *args),
                                ledger, key, 60)
        logs = sup.logs()

        assert not a.lost, sorted(a.lost)[:5]  # no failover: every acknowledged enqueue
        assert a.states == Counter({"completed": len(a.expected)}), a.states
        assert all(a.runs.get(j, 0) >= 1 for j in a.expected), "a completed job never ran"
        duplicates = {j: n for j, n in a.runs.items() if n > 1}
        unexplained = [j for j, n in duplicates.items()
                       if n > int(broker.jobs.fetch_many([j])[0].get(b"att", 0) or 0)]
        assert not unexplained, unexplained
        assert a.runs[long_job.id] == 1 and long_job.refresh().attempts == 1
        assert sup.proc.poll() is None, "the supervisor stopped"
        assert "Traceback" not in logs

        report = {
            "jobs": len(a.expected), "enqueues_acked_during_run": len(a.acked),
            "producer_errors": dict(producer.errors),
            "jobs_run_twice_or_more": len(duplicates),
            "attempts_histogram": dict(sorted(a.attempts.items())), "moves": moves,
            "warnings_logged": logs.count("WARNING"),
            "wall_s": round(time.monotonic() - began, 1),
        }
        print(f"\ncluster slot migration figures: {report}")
    finally:
        sup.stop()
        ledger.delete(f"{key}:runs")
        ledger.close()
        broker.client.close()
