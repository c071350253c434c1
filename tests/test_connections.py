"""A host's connections to Redis: named after who holds them, and bounded per process
(two per worker, the supervisor's pool plus one) however its jobs use Redis (job code's
calls have connections of their own); and a Redis Cluster node, refused with advice."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs import (
    Broker,
    BrokerError,
    Call,
    EnqueueOptions,
    Job,
    Queue,
    RedisSettings,
    enqueue_many,
)
from supervisor.errors import ExitCode
from supervisor.runtime.connections import SUPERVISOR_POOL, WORKER_POOL
from tests.cluster import ValkeyCluster
from tests.procs import Running, start_and_wait
from tests.server import ValkeyServer


def _held(raw) -> collections.Counter[str]:  # type: ignore[no-untyped-def]
    """Connections per client name (``jobvisor:<role>:<host>:<pid>``)."""
    return collections.Counter(c["name"] for c in raw.client_list()
                               if c["name"].startswith("jobvisor:"))


def test_each_process_of_a_host_holds_no_more_connections_than_its_bound(
        sup, tmp_path: Path, raw):
    workers = 3
    r = start_and_wait(sup, workers=workers)
    # Everything a worker's connections serve: short jobs in batches (the holder thread),
    # steady jobs claimed ahead, and job code that enqueues from 6 threads at once.
    out = tmp_path / "ran"
    calls = [Call("tests.jobfuncs:ledger", (str(out), f"s{i}"), {},
                  EnqueueOptions(queue="default")) for i in range(300)]
    calls += [Call("tests.jobfuncs:ledger", (str(out), f"l{i}", 0.02), {},
                   EnqueueOptions(queue="default")) for i in range(12)]
    calls += [Call("tests.jobfuncs:enqueues_from_threads", (6,), {},
                   EnqueueOptions(queue="default")) for _ in range(workers)]
    jobs_ = enqueue_many(calls, r.broker)
    results = [j.result(timeout=60) for j in jobs_]
    inner = [Job.fetch(i, r.broker) for ids in results[-workers:] for i in ids]
    assert sorted(j.result(timeout=30) for j in inner) == sorted(list(range(1, 7)) * workers)
    assert len(out.read_text().split()) == 312
    ours = {r.proc.pid, *(w.pid for w in r.workers())}
    held = {name: n for name, n in _held(raw).items() if int(name.rsplit(":", 1)[1]) in ours}
    roles = collections.Counter(name.split(":")[1] for name in held)
    # Every process shows up by name: the supervisor, and each worker (an idle worker
    # keeps its script connection open for its blocking wait); job code's own calls go
    # through connections of their own, named as such (those of its threads close as
    # the threads end), outside the bound.
    assert roles["supervisor"] == 1 and roles["worker"] == workers, held
    ours_held = {name: n for name, n in held.items() if ":job:" not in name}
    for name, count in ours_held.items():
        bound = WORKER_POOL + 1 if ":worker:" in name else SUPERVISOR_POOL + 1
        assert 1 <= count <= bound, held
    assert sum(ours_held.values()) <= workers * (WORKER_POOL + 1) + SUPERVISOR_POOL + 1
    assert all(Job.fetch(j.id, r.broker).attempts == 1 for j in jobs_[:5])
    assert r.stop() == 0


@pytest.fixture
def cluster_node(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A one-node Redis Cluster (every slot on it), reached here on its unix socket."""
    cluster = ValkeyCluster(tmp_path / "cluster", primaries=1, replicas=0)
    cluster.start()
    yield cluster.nodes[0].server
    cluster.stop()


def test_a_cluster_node_is_refused_with_advice_not_left_to_fail_at_run_time(
        cluster_node, tmp_path: Path, namespace: str):
    broker = Broker(cluster_node.url, redis_settings=RedisSettings(namespace=namespace))
    with pytest.raises(BrokerError, match="is a Redis Cluster node: reach a cluster with a "
                                          "redis\\+cluster:// URL"):
        Queue("default", broker).enqueue("examples.cpu:noop")
    r = Running(tmp_path, cluster_node, namespace)
    assert r.proc.wait(30) == ExitCode.CONFIG_ERROR
    assert ("is a Redis Cluster node: reach a cluster with a redis+cluster:// URL listing "
            "some of its nodes") in r.logs()
    assert r.workers() == []


def test_a_batch_whose_transaction_a_lost_connection_cut_off_is_written_again(
        broker, raw, monkeypatch):
    """redis-py reports a connection lost at EXEC under WATCH as a WatchError, which alone
    means "a concurrent enqueue of this batch id won": the batch is written again, not
    silently dropped. The connection is really killed, by the server, at that moment."""
    from redis.client import Pipeline

    from jobs import batch
    from tests import jobfuncs

    real_execute = Pipeline.execute
    cuts = []

    def execute_after_a_cut(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.watching and not cuts:
            cuts.append(raw.client_kill_filter(_type="normal", skipme=True))
        return real_execute(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "execute", execute_after_a_cut)
    handle = batch([jobfuncs.add.call(i, 1) for i in range(3)]).enqueue(broker)
    assert cuts and cuts[0] >= 1  # the transaction's connection was killed once
    assert handle.progress().total == 3
    assert Queue("default", broker).counts()["queued"] == 3
