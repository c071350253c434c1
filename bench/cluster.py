"""Past one server: namespaces on a Valkey Cluster, on one primary or spread over three.

A namespace lives in one hash slot on a cluster (``jobs.store.keys``); several
namespaces spread the load when their slots are on different primaries. Three
namespaces, each drained by a supervisor of its own, on a cluster of three primaries
(no replicas: the figure is the primaries' work): once with all three namespaces on one
primary, once with one namespace per primary. What counts is each primary's CPU per job
of the whole drain: the busiest one's is what bounds the fleet (its ceiling is one
over it). On a 2-core machine the jobs/s cannot show three primaries' worth of work:
every process shares the same two cores.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import psutil

from bench.env import Bench
from bench.fleet import CHUNK, stop_fleet
from bench.scenarios import _wait_drained
from jobs import Broker, Queue, RedisSettings
from jobs.cluster import pause, resume
from jobs.store.slot_owner import namespace_slot
from tests.cluster import ValkeyCluster

NAMESPACES = 3


def _namespaces(cluster: ValkeyCluster, spread: bool) -> list[str]:
    """Three namespace names: on three primaries, or all on the first one."""
    chosen: list[str] = []
    owners: set[int] = set()
    first = cluster.nodes[0].port
    for i in itertools.count():
        name = f"bench-c{i}"
        owner = cluster.owner(namespace_slot(name)).port
        if (spread and owner not in owners) or (not spread and owner == first):
            chosen.append(name)
            owners.add(owner)
        if len(chosen) == NAMESPACES:
            return chosen
    raise AssertionError("unreachable")


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def namespaces_on_cluster(b: Bench, n: int, workers: int, spread: bool) -> dict[str, Any]:
    """Drain ``n`` queued no-op jobs in each of three namespaces, each with a supervisor of
    ``workers`` workers."""
    cluster = ValkeyCluster(b.tmp / f"cluster-{int(spread)}", primaries=3, replicas=0)
    cluster.start()
    try:
        names = _namespaces(cluster, spread)
        brokers = [Broker(cluster.url, redis_settings=RedisSettings(namespace=ns))
                   for ns in names]
        procs = [b.supervisor(broker, workers=workers, url=cluster.url, name="ns")
                 for broker in brokers]
        last = []
        for broker in brokers:
            q = Queue("default", broker)
            pause("default", broker)
            for i in range(0, n, CHUNK):
                jobs_ = q.enqueue_many([("examples.cpu:noop",)] * min(CHUNK, n - i))
            last.append((q, jobs_[-2:]))
        primaries = [psutil.Process(node.server.proc.pid) for node in cluster.nodes
                     if node.server.proc is not None]
        before = [_cpu(p) for p in primaries]
        start = time.perf_counter()
        for broker in brokers:
            resume("default", broker)
        for q, tail in last:
            _wait_drained(q, tail)
        took = time.perf_counter() - start
        used = [_cpu(p) - c for p, c in zip(primaries, before, strict=True)]
        stop_fleet(b, procs)
        for broker in brokers:
            broker.client.close()
    finally:
        cluster.stop()
    total = NAMESPACES * n
    busiest = max(used) / total
    return {"jobs_per_s": total / took,
            "primaries_busy": sum(1 for u in used if u > 0.05 * max(used)),
            "busiest_primary_us_per_job": busiest * 1e6,
            "all_primaries_us_per_job": sum(used) / total * 1e6,
            "ceiling_jobs_per_s": 1 / busiest,
            "note": f"{NAMESPACES} namespaces x {workers} workers; per job of the whole drain"}
