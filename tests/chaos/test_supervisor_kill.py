"""Chaos 2: SIGKILL a whole supervisor mid-run, as if its host died.

Its workers die with it (PDEATHSIG), so nobody renews the leases of the jobs they
had claimed (each worker runs a 1 s job at that moment, past its ledger write, so there
are some, and each runs twice). The second supervisor keeps working and, once those leases expire
(``lease_timeout``, 3 s here), puts the jobs back ("worker lost", an attempt spent);
then the first supervisor is started again and takes its share. In a soak run the two
supervisors take turns being killed for the whole duration.
"""

from __future__ import annotations

import time

from jobs import Broker
from tests.chaos.rig import QUEUE, Supervisor, claimed_apart, job_ids
from tests.chaos.workload import Producer, conclude, keep_running, percentile, wait_progress
from tests.helpers import wait_until

LEASE = 3.0
LONG_MS = 1000.0


def orphans(broker: Broker, pids: list[int]) -> dict[str, str]:
    """Active jobs claimed with a token of one of ``pids``: ``{job id: token}``."""
    c = broker.client
    ids = [m.decode() for m in c.zrange(broker.keys.active(QUEUE), 0, -1)]
    pipe = c.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(broker.keys.job(job_id), "st", "tok")
    marks = tuple(f":{p}:" for p in pids)
    out = {}
    for job_id, (st, tok) in zip(ids, pipe.execute(), strict=True):
        if st == b"active" and tok and any(m in tok.decode() for m in marks):
            out[job_id] = tok.decode()
    return out


def still_claimed(broker: Broker, claimed: dict[str, str]) -> list[str]:
    pipe = broker.client.pipeline(transaction=False)
    for job_id in claimed:
        pipe.hmget(broker.keys.job(job_id), "st", "tok")
    return [job_id for (job_id, tok), (st, now) in zip(claimed.items(), pipe.execute(),
                                                        strict=True)
            if st == b"active" and now is not None and now.decode() == tok]


def kill_and_recover(victim: Supervisor, other: Supervisor, broker: Broker) -> tuple[float, int]:
    """Kill ``victim``; return (seconds until its jobs were back, how many it had claimed)."""
    kids = victim.kill()
    killed_at = victim.killed_at
    claimed = orphans(broker, kids)
    wait_until(lambda: not still_claimed(broker, claimed), timeout=LEASE + 20,
               what=f"jobs of the killed supervisor to be reclaimed: {sorted(claimed)[:5]}")
    recovered = time.monotonic() - killed_at
    assert other.alive()
    for job_id in claimed:  # each one was put back with the reason, and has run (or will)
        errors = broker.jobs.fetch(job_id).errors  # type: ignore[union-attr]
        assert any(e.type == "WorkerLost" for e in errors), (job_id, errors)
    return recovered, len(claimed)


def test_supervisor_killed_mid_run_second_finishes(server, namespace, job_broker, ledger,
                                                   cluster, duration, soak):
    began = time.monotonic()
    a = cluster(server.url, workers=2, lease=LEASE)
    b = cluster(server.url, workers=2, lease=LEASE)
    producer = Producer(server.url, namespace, ledger.url, ledger.key, tag="host",
                        rate=300, work_ms=8.0).start()
    producer.wait_for(100)
    recoveries: list[float] = []
    orphaned = 0
    victim, other = a, b
    end = time.monotonic() + duration
    while True:
        # Every worker of both supervisors runs one of these when the kill comes, so
        # the victim surely leaves jobs behind.
        long_jobs = job_ids("long", 4 * len(recoveries), 4)
        producer.send(long_jobs, work_ms=LONG_MS, priority=100)
        wait_until(lambda ids=long_jobs: claimed_apart(job_broker, ids, a, b),
                   timeout=20, what="every worker to run a long job")
        # Kill once they have done their side effect: a rerun is then a real duplicate.
        wait_until(lambda ids=long_jobs: set(ids) <= ledger.done(), timeout=20,
                   what="the long jobs' ledger writes")
        took, n = kill_and_recover(victim, other, job_broker)
        assert n >= 1, "the killed supervisor had claimed no job"
        recoveries.append(took)
        orphaned += n
        # The survivor alone keeps the queue moving...
        wait_progress(job_broker, job_broker.client.zcard(job_broker.keys.completed(QUEUE)))
        # ...and the restarted supervisor joins in.
        victim.start()
        victim.wait_ready(2)
        wait_until(lambda v=victim: v.busy(), timeout=20, what="the restarted supervisor to work")
        if not soak or time.monotonic() >= end:
            break
        keep_running(min(5.0, max(0.0, end - time.monotonic())), a, b, producer=producer)
        victim, other = other, victim
    keep_running(max(0.0, min(1.0, end - time.monotonic())), a, b, producer=producer)
    f = conclude("sigkill-supervisor", "SIGKILL one of two supervisors (host loss)", producer,
                 ledger, began, broker=job_broker, faults=len(recoveries),
                 orphaned_jobs=orphaned, lease_s=LEASE, recovery_s=percentile(recoveries, 1.0),
                 duration_s=duration)
    assert set(f.causes) <= {"WorkerLost"}, f.causes
    # Reclaimed within the lease plus the reclaim cadence (1 s), generously bounded.
    assert max(recoveries) < LEASE + 10
    assert a.alive() and b.alive()
