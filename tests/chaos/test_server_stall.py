"""Chaos 4: freeze the job server (SIGSTOP) for longer than the lease, then SIGCONT.

A stalled server is worse than a dead one: connections stay open and commands hang
until the client's socket timeout. Here the lease is 1 s, the clients' socket timeout
1 s, and the stall 2.5 s, so every kind of client times out mid-command, reconnects,
retries with backoff and resends, while short jobs stream in. Two long jobs (3 s) run
through each stall: when the server wakes up its clock (``TIME``) has jumped past every
lease deadline. A supervisor whose duties were cut off for half a lease or more waits a
whole lease before reclaiming anything, so the other supervisor renews its long job
first: no job runs twice. Nothing may be lost and no worker may crash.
"""

from __future__ import annotations

import threading
import time

from tests.chaos.rig import claimed_apart, job_ids
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
from tests.helpers import wait_until

LEASE = 1.0
SOCKET_TIMEOUT = 1.0
STALL = 2.5
LONG_MS = (STALL + 0.5) * 1000


def test_server_stalled_longer_than_the_lease(private_server, namespace, ledger, cluster,
                                              duration, soak):
    began = time.monotonic()
    srv = private_server()
    sups = [cluster(srv.url, workers=2, lease=LEASE, socket_timeout=SOCKET_TIMEOUT)
            for _ in range(2)]
    kids = worker_pids(*sups)
    producer = Producer(srv.url, namespace, ledger.url, ledger.key, tag="stall", rate=300,
                        work_ms=8.0, socket_timeout=SOCKET_TIMEOUT).start()
    broker = producer.broker
    producer.wait_for(100)
    stalls = 0
    recoveries: list[float] = []
    end = time.monotonic() + duration
    while True:
        keep_running(min(duration / 4, 5.0), *sups, producer=producer)
        long_ids = job_ids("long", 2 * stalls, 2)
        producer.send(long_ids, work_ms=LONG_MS, priority=100)
        wait_until(lambda ids=long_ids: claimed_apart(broker, ids, *sups),
                   timeout=20, what="both long jobs to run")
        srv.stall()
        stalls += 1
        threading.Event().wait(STALL)  # the stall itself: its length is the fault
        srv.resume()
        recoveries.append(wait_progress(broker, completed_count(broker)))
        if not soak or time.monotonic() >= end:
            break
    keep_running(max(0.0, min(duration / 2, end - time.monotonic())), *sups, producer=producer)
    f = conclude("server-stall", f"SIGSTOP server {STALL:g} s (lease {LEASE:g} s)", producer,
                 ledger, began, faults=stalls, stall_s=STALL, lease_s=LEASE,
                 recovery_s=percentile(recoveries, 1.0), producer_errors=dict(producer.errors),
                 duration_s=duration,
                 reclaims=sum(s.logs().count("reclaimed after its lease expired") for s in sups),
                 producer_longest_wait_s=round(producer.longest_wait, 3))
    assert not f.causes, f.causes  # the reclaimers wait for the renewals after the stall
    assert_pool_intact(sups, kids, "in the stall")
    assert producer.longest_wait >= STALL * 0.8
