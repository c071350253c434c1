"""Chaos 1c: SIGKILL workers that claim ahead.

Jobs of a steady 12 ms: once their run time is known, each worker claims its next job a
few milliseconds before the current one ends, and writes the success of the one before
while the next runs. A worker killed at any moment may hold a job claimed ahead (it goes
back, no attempt spent), a success not written yet (its supervisor writes it), or a
claim ahead in flight (what it took goes back). Each kill spends at most one attempt.
"""

from __future__ import annotations

import time

from tests.chaos.workload import ChildKiller, Producer, conclude_kills, keep_running


def test_sigkill_workers_that_claim_ahead(server, namespace, job_broker, ledger, cluster,
                                          duration):
    began = time.monotonic()
    sup = cluster(server.url, workers=2, lease=3.0)
    producer = Producer(server.url, namespace, ledger.url, ledger.key, tag="ahead",
                        rate=300, backlog=60, work_ms=12.0).start()
    producer.wait_for(40)
    killer = ChildKiller([sup], job_broker, interval=(0.1, 0.3)).start()
    keep_running(duration, sup, producer=producer)
    killer.stop()
    events = job_broker.client.xrange(job_broker.keys.events())
    conclude_kills("sigkill-claim-ahead", "SIGKILL a worker claiming ahead every 0.1-0.3 s", producer, ledger,
                   began, killer, job_broker, duration)
    # Claims ahead happened: a job claimed on its own while the one before still ran,
    # and that one's success written on its own afterwards (without claim-ahead, a
    # worker with work waiting claims its next job in the call that writes the last).
    alone = [e for _, e in events if e[b"e"] == b"started" and b"p.e" not in e]
    assert len(alone) >= 10, len(alone)
    assert sup.alive()
    sup.wait_ready(2)
    assert "Traceback" not in sup.logs()
