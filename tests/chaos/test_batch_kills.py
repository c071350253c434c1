"""Chaos 1b: SIGKILL workers while they hold batches of short jobs.

Jobs that run well under a millisecond are claimed several at a time, and their
successes written together with the next claim. A worker killed at any moment may hold
jobs it has not started (they go back, no attempt spent), successes it has not written
(its supervisor writes them), and a batch claim in flight (what it took goes back).
Only the job it was running is charged: each kill spends at most one attempt.
"""

from __future__ import annotations

import time

from tests.chaos.workload import ChildKiller, Producer, conclude_kills, keep_running


def test_sigkill_workers_holding_batches(server, namespace, job_broker, ledger, cluster,
                                         duration):
    began = time.monotonic()
    sup = cluster(server.url, workers=2, lease=3.0)
    producer = Producer(server.url, namespace, ledger.url, ledger.key, tag="batch",
                        rate=4000, batch=100, backlog=400, work_ms=0.05).start()
    producer.wait_for(400)
    killer = ChildKiller([sup], job_broker, interval=(0.1, 0.3)).start()
    keep_running(duration, sup, producer=producer)
    killer.stop()
    conclude_kills("sigkill-batches", "SIGKILL a worker holding a batch every 0.1-0.3 s", producer, ledger,
                   began, killer, job_broker, duration)
    # Batches were claimed (the second job of a batch carries '+2' in its token), and
    # kills found held jobs to give back or successes to write.
    tokens = [job_broker.client.hget(job_broker.keys.job(i), "tok") or b""
              for i in producer.acked]
    assert any(b"+" in t for t in tokens), "no job was claimed in a batch"
    logs = sup.logs()
    assert "released back to" in logs or "written now" in logs, logs[-3000:]
    assert sup.alive()
    sup.wait_ready(2)
    assert "Traceback" not in logs
