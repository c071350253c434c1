"""Chaos 1: SIGKILL random busy workers, again and again, while jobs stream in.

Each kill lands in a running job (the worker's title says which). The supervisor reaps
the worker, records a crash on the job and retries it, and forks a replacement. A
worker killed right after it wrote one job's outcome and claimed the next in the same
round trip leaves that next job ``active`` with nobody renewing its lease: another
tick of the supervisor reclaims it after ``lease_timeout`` ("worker lost"). Either
way the job runs again, and the ledger must show every second run explained.
"""

from __future__ import annotations

import time

from tests.chaos.workload import ChildKiller, Producer, conclude, keep_running, percentile


def test_sigkill_random_busy_children(server, namespace, job_broker, ledger, cluster,
                                      duration):
    began = time.monotonic()
    sup = cluster(server.url, workers=2, lease=3.0)
    producer = Producer(server.url, namespace, ledger.url, ledger.key, tag="kill",
                        rate=300, work_ms=8.0).start()
    producer.wait_for(40)
    killer = ChildKiller([sup], job_broker, interval=(0.1, 0.3)).start()
    keep_running(duration, sup, producer=producer)
    killer.stop()
    f = conclude("sigkill-children", "SIGKILL busy worker every 0.1-0.3 s", producer, ledger,
                 began, broker=job_broker, faults=len(killer.kills), duration_s=duration,
                 recovery_s=percentile(killer.accounted_s, 1.0),
                 accounted_p50_s=percentile(killer.accounted_s, 0.5))
    assert len(killer.kills) >= 3, "the scenario must actually kill workers"
    assert set(f.causes) <= {"WorkerCrashed", "WorkerLost"}, f.causes
    assert sup.alive()
    sup.wait_ready(2)
    assert "Traceback" not in sup.logs()
