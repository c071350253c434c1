"""Redis ACLs: the minimal ACL of each role, tested against the session Valkey server.

Roles: the **worker** (``jobvisor run``: the supervisor and its workers, and every
operator command that changes state: cancel, delete, clear, pause/resume, dead
requeue/purge, scale, reload, schedules and their pause/resume/trigger), the **producer** (enqueue in every form, wait for results, read
job state, cancel its jobs) and the read-only **dashboard** (``stats``, ``show``,
``top``, ``hosts``, ``workers``, ``events``, ``jobs list``, ``dead list``, ``dead
groups``, ``schedules``, ``health``).

How the lists were made: every command the Python code sends (grep of ``jobs/`` and
``supervisor/``, then MONITOR on a private server while each role ran), plus every
command a Lua script of that role may call (``jobs/store/lua/``; each script carries the
shared helpers and operations it includes, ``_lib.lua`` and ``_*.lua``, so all of those
count). The Lua part is not trimmed
further on purpose: a script refused a command halfway stops there, and Redis does not
undo the writes it already made (a job record left outside every state index).

ACLs restrict commands and keys, not scripts: a user with EVALSHA and SCRIPT LOAD can
run any Lua that uses only its allowed commands on its allowed keys. The boundary is
the namespace (``~<ns>:*``) and the absence of everything else (FLUSHALL, KEYS, CONFIG,
DEBUG, other namespaces). The dashboard runs no script and its key permission is
read-only (``%R~``), so it cannot change anything.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import redis

from jobs import (
    BatchHandle,
    Broker,
    BrokerError,
    BrokerUnavailable,
    Job,
    JobState,
    Queue,
    RedisSettings,
    Worker,
    batch,
)
from jobs.limits import status as limit_status
from jobs.options import Call, EnqueueOptions
from jobs.stats import queue_stats
from tests.helpers import wait_until
from tests.procs import Running

ROOT = Path(__file__).resolve().parent.parent

# Every command a Lua script of the producer may call (enqueue, watch, cancel and the
# shared helpers they carry); the worker's scripts add two.
LUA = ("+del +exists +expire +get +hdel +hexists +hget +hincrby +hmget +hset +incr +incrby "
       "+llen +ltrim +pexpire +rpush +sadd +scard +set +sismember +smembers +srem +time "
       "+xadd +zadd +zcard +zpopmin +zrange +zrangebyscore +zrem +zremrangebyrank")
PRODUCER = ("~{ns}:* +ping +evalsha +script|load +script|exists +hgetall +lrange +blpop "
            "+watch +unwatch +multi +exec +discard " + LUA)
WORKER = PRODUCER + " +zrevrangebyscore +zscore +lpop +smismember +hsetnx"
DASHBOARD = ("%R~{ns}:* +ping +time +mget +hget +hmget +hgetall +lrange +smembers "
             "+scard +zcard +zrange +zrevrange +zrangebyscore +xrevrange +xread")
ROLES = {"worker": WORKER, "producer": PRODUCER, "dashboard": DASHBOARD}
# redis-py announces itself with CLIENT SETINFO on each new connection, and supervisors
# and workers name theirs with CLIENT SETNAME; both ignore a refusal, so granting them
# (``+client|setinfo`` on Redis >= 7.2 and Valkey, ``+client|setname``) only keeps ACL LOG
# quiet and, for the second, the connections named.
# A supervisor also asks INFO once at start (is this a cluster node?) and skips that
# check when refused.
HARMLESS = {"client|setinfo", "client|setname", "info"}


def rules(role: str, namespace: str) -> list[str]:
    return ROLES[role].format(ns=namespace).split()


def without(role: str, namespace: str, *dropped: str) -> list[str]:
    kept = [r for r in rules(role, namespace) if r not in dropped]
    assert len(kept) == len(rules(role, namespace)) - len(dropped), dropped
    return kept


class Users:
    """ACL users of one test on the session server, each with a fresh password;
    deleted afterwards. The default user (no password) stays the admin."""

    def __init__(self, server, namespace: str, tmp_path: Path) -> None:
        self.admin = redis.Redis(unix_socket_path=str(server.socket), decode_responses=True)
        self.socket = server.socket
        self.namespace = namespace
        self.tmp = tmp_path
        self.passwords: dict[str, str] = {}

    def add(self, name: str, acl: list[str]) -> str:
        user = f"{self.namespace}-{name}"
        password = self.passwords.get(user) or secrets.token_urlsafe(24)
        self.passwords[user] = password
        self.admin.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", *acl)
        return user

    def url(self, user: str) -> str:
        return f"unix://{user}@{self.socket}"

    def password_file(self, user: str) -> Path:
        path = self.tmp / f"{user}.password"
        path.write_text(self.passwords[user] + "\n")
        path.chmod(0o600)
        return path

    def broker(self, user: str) -> Broker:
        return Broker(self.url(user), redis_settings=RedisSettings(
            namespace=self.namespace, password_file=str(self.password_file(user))))

    def denied(self) -> list[tuple[str, str, str]]:
        """(user, reason, object) of every ACL LOG entry of these users, harmless or not."""
        entries = self.admin.execute_command("ACL", "LOG", "128")
        ours = set(self.passwords)
        out = []
        for e in entries:
            e = dict(zip(e[::2], e[1::2], strict=True)) if isinstance(e, list) else e
            e = {(k.decode() if isinstance(k, bytes) else k): v for k, v in e.items()}
            user = e["username"].decode() if isinstance(e["username"], bytes) else e["username"]
            if user in ours:
                obj = e["object"].decode() if isinstance(e["object"], bytes) else e["object"]
                reason = e["reason"].decode() if isinstance(e["reason"], bytes) else e["reason"]
                out.append((user, reason, obj))
        return out

    def close(self) -> None:
        for user in self.passwords:
            self.admin.execute_command("ACL", "DELUSER", user)
        keys = list(self.admin.scan_iter(match=f"{self.namespace}:*", count=1000))
        if keys:
            self.admin.delete(*keys)
        self.admin.close()


@pytest.fixture
def users(server, namespace, tmp_path):
    u = Users(server, namespace, tmp_path)
    yield u
    u.close()


def cli(config: Path, password: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", "--config", str(config), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=30,
        env={**_environ(), "JOBVISOR_REDIS_PASSWORD": password})


def _environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("JOBVISOR_")}


def config_for(users: Users, user: str, name: str, tail: str = "") -> Path:
    path = users.tmp / f"{name}.toml"
    path.write_text(f'[redis]\nurl = "{users.url(user)}"\nnamespace = "{users.namespace}"\n'
                    f'[supervisor]\ndata_dir = "{users.tmp / name}"\n{tail}')
    return path


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


SCHEDULE = """
[[schedules]]
name = "acl-tick"
cron = "* * * * * *"
job = "examples.cpu:noop"

[queue_limits.default]
max_concurrency = 8
"""


def produce(p: Broker) -> dict[str, Job]:
    """Everything a producer does, through the producer's own ACL."""
    q = Queue("default", p)
    jobs_ = {
        "plain": q.enqueue("examples.cpu:count_primes", 1000),
        "delayed": q.options(delay=0.3).enqueue("examples.cpu:count_primes", 10),
        "unique": q.options(unique_for=60, unique_until="window").enqueue(
            "examples.cpu:count_primes", 77),
        "progress": q.enqueue("tests.jobfuncs:reports_progress", 5),
        "fails": q.enqueue("tests.jobfuncs:always_fails"),
        "hook": q.enqueue("tests.jobfuncs:dies_with_hook"),
        "limited": q.enqueue("tests.jobfuncs:rate_limited", "acl"),
        "runaway": q.enqueue("examples.cpu:runaway"),
        "long": q.enqueue("examples.cpu:spin", 30.0),
        "canceled": q.options(delay=600).enqueue("examples.cpu:noop"),
    }
    again = q.options(unique_for=60, unique_until="window").enqueue("examples.cpu:count_primes", 77)
    assert again.id == jobs_["unique"].id
    jobs_["child"] = q.options(depends_on=[jobs_["plain"].id], pass_result=True).enqueue(
        "examples.cpu:hash_chain")
    jobs_.update({f"bulk{i}": j for i, j in enumerate(
        q.enqueue_many([("examples.cpu:count_primes", n) for n in (10, 20, 30)]))})
    opts = EnqueueOptions(queue="default")
    b = batch([Call("examples.cpu:count_primes", (n,), {}, opts) for n in (100, 200)],
              on_complete=Call("examples.cpu:noop", (), {}, opts)).enqueue(broker=p)
    jobs_["batch"] = Job(b.id, p)  # a handle for the id only; see the batch checks below
    assert jobs_["canceled"].cancel()
    return jobs_


def test_each_role_works_with_exactly_its_acl(users, tmp_path, namespace):
    worker = users.add("worker", rules("worker", namespace))
    producer = users.add("producer", rules("producer", namespace))
    dashboard = users.add("dashboard", rules("dashboard", namespace))

    # The worker role: a supervisor with cron, a queue limit, retries, a timeout kill,
    # an on_dead hook and the cancel of a running job. Its password comes from a file.
    (tmp_path / "sup").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sup = Running(tmp_path / "sup", SimpleNamespace(url=users.url(worker)), namespace,
                  tail=SCHEDULE + f'[metrics]\naddress = "127.0.0.1:{port}"\n'
                                  "[health]\nmax_lag = 3600.0\nmax_dead = 1000\n",
                  env={"JOBVISOR_REDIS_PASSWORD_FILE": str(users.password_file(worker))})
    try:
        sup.wait_workers(2)
        # The supervisor's /readyz, every check of it, under the worker role.
        wait_until(lambda: readyz(port) == 200, timeout=10, what="/readyz to pass")
        p = users.broker(producer)
        made = produce(p)
        assert made["plain"].result(timeout=30) == 168
        assert isinstance(made["child"].result(timeout=30), str)
        assert made["progress"].result(timeout=30) == 5
        assert [made[f"bulk{i}"].result(timeout=30) for i in range(3)] == [4, 8, 10]
        assert BatchHandle(made["batch"].id, p).wait(timeout=30).completed == 2
        wait_until(lambda: made["long"].refresh().state is JobState.ACTIVE, timeout=20,
                   what="the long job to start")
        assert made["long"].cancel()
        for name in ("fails", "hook", "runaway", "long", "delayed", "limited", "canceled"):
            wait_until(lambda n=name: made[n].refresh().state.is_final, timeout=30,
                       what=f"job {name} to end")
        assert made["fails"].state is JobState.DEAD and made["runaway"].state is JobState.DEAD
        assert made["long"].state is JobState.CANCELED
        assert made["canceled"].state is JobState.CANCELED
        # An operator's `scale` runs as the worker role: it reads the supervisor's entry
        # (one GET, no SCAN) before sending, and the supervisor takes it with BLPOP.
        ident = f"{socket.gethostname()}:{sup.proc.pid}"
        scaled = cli(config_for(users, worker, "operator"), users.passwords[worker],
                     "scale", "3", "--host", ident)
        assert scaled.returncode == 0, scaled.stderr
        assert re.fullmatch(rf"asked {ident} to run 3 workers \(now \d\)\n", scaled.stdout)
        sup.wait_workers(3)
        # So do `delete` (cancel, purge, the audit event) and `clear`.
        for args in (["delete", made["canceled"].id], ["clear", "default", "--yes"]):
            out = cli(config_for(users, worker, "operator"), users.passwords[worker], *args)
            assert out.returncode == 0, (args, out.stderr)
        # ... and steers the supervisor's cron schedule (published by it: no local copy).
        for action in ("pause", "resume", "trigger"):
            steered = cli(config_for(users, worker, "operator"), users.passwords[worker],
                          "schedules", action, "acl-tick")
            assert steered.returncode == 0 and "schedule acl-tick: " in steered.stdout, (
                action, steered.stderr)

        # The dashboard role, from the CLI, its password from the environment.
        config = config_for(users, dashboard, "dashboard", SCHEDULE)
        password = users.passwords[dashboard]

        def cron_fired() -> bool:
            out = cli(config, password, "schedules", "--json")
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)[0]["last"] is not None

        wait_until(cron_fired, timeout=15, interval=0.2, what="the cron schedule to fire")
        outputs = []
        for args in (["stats", "--json"], ["stats"], ["show", made["plain"].id, "--json"],
                     ["show", made["fails"].id], ["top", "--once"], ["hosts"], ["workers"],
                     ["events", "--count", "5"], ["dead", "list"], ["schedules"],
                     ["health", "--max-lag", "3600", "--max-dead", "1000"],
                     ["jobs", "list", "--state", "dead"], ["dead", "groups"]):
            out = cli(config, password, *args)
            assert out.returncode == 0, (args, out.stderr)
            outputs.append(out.stdout + out.stderr)
        assert '"completed"' in outputs[0] and '"state": "completed"' in outputs[2]
        assert "ValueError" in outputs[3] and str(sup.proc.pid) in outputs[5]
        assert "ok    dead:default" in outputs[10] and "FAIL" not in outputs[10]
        assert readyz(port) == 200
        # ... and the read-only Python API a dashboard of one's own would use.
        d = users.broker(dashboard)
        assert Queue("default", d).counts()["dead"] >= 2
        assert Job.fetch(made["plain"].id, d).state is JobState.COMPLETED  # result(): producer
        assert BatchHandle(made["batch"].id, d).progress().completed == 2
        assert [s.queue for s in queue_stats(d)] == ["default"]
        assert {lim.name for lim in limit_status(d)} >= {"q:default"}
        assert len(list(Queue("default", d).dead(limit=10))) >= 2

        # Nothing any role did was refused (but redis-py's harmless CLIENT SETINFO).
        refused = [d for d in users.denied() if d[2] not in HARMLESS]
        assert refused == [], refused

        # No password anywhere: logs, titles, CLI output, events, job records.
        titles = [" ".join(p.cmdline()) for p in [psutil.Process(sup.proc.pid),
                                                  *sup.children()]]
        raw = redis.Redis(unix_socket_path=str(users.socket))
        stored = [repr(raw.xrange(f"{namespace}:events"))]
        for key in raw.scan_iter(match=f"{namespace}:job:*", count=1000):
            stored.append(repr(raw.hgetall(key)))
        raw.close()
        for secret in users.passwords.values():
            for text in (sup.logs(), *titles, *outputs, *stored):
                assert secret not in text
    finally:
        sup.stop()
    assert "Traceback" not in sup.logs()


def test_each_role_fails_cleanly_without_a_needed_permission(users, tmp_path, namespace):
    messages: list[str] = []

    # Producer without EVALSHA: refused before any script runs, so nothing is written.
    producer = users.add("producer", without("producer", namespace, "+evalsha"))
    with pytest.raises(BrokerError) as info:
        Queue("default", users.broker(producer)).enqueue("examples.cpu:noop")
    messages.append(str(info.value))
    assert "NOPERM" in messages[-1] and "'evalsha'" in messages[-1]
    assert "the ACL user lacks a command or key pattern" in messages[-1]

    # Producer of another namespace: the keys are checked before the script runs.
    stranger = users.add("stranger", [f"~not-{namespace}:*", *rules("producer", namespace)[1:]])
    with pytest.raises(BrokerError) as info:
        Queue("default", users.broker(stranger)).enqueue("examples.cpu:noop")
    messages.append(str(info.value))
    assert "No permissions to access a key" in messages[-1]
    assert "the ACL user lacks a command or key pattern" in messages[-1]
    assert not users.admin.keys(f"{namespace}:*"), "a refused enqueue wrote something"

    # Dashboard: cannot write at all, and without ZRANGE `hosts` says why in one line.
    dashboard = users.add("dashboard", without("dashboard", namespace, "+zrange"))
    with pytest.raises(BrokerError, match="NOPERM"):
        Queue("default", users.broker(dashboard)).enqueue("examples.cpu:noop")
    out = cli(config_for(users, dashboard, "dash"), users.passwords[dashboard], "hosts")
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "'zrange'" in out.stderr and "the ACL user lacks a command or key pattern" in out.stderr
    assert "Traceback" not in out.stderr
    messages.append(out.stderr)

    # A wrong password: the error says to check user and password, and shows neither.
    users.passwords[f"{namespace}-producer"] = "not-the-password"
    with pytest.raises(BrokerUnavailable) as info:
        Queue("default", users.broker(producer)).enqueue("examples.cpu:noop")
    messages.append(str(info.value))
    assert "check the ACL user in the URL and the password" in messages[-1]
    assert "not-the-password" not in messages[-1]

    # Worker without BLPOP: an idle worker's wait is refused. It logs why and retries;
    # the supervisor keeps running (as in any Redis trouble).
    worker = users.add("worker", without("worker", namespace, "+blpop"))
    (tmp_path / "sup").mkdir()
    sup = Running(tmp_path / "sup", SimpleNamespace(url=users.url(worker)), namespace,
                  workers=1, env={"JOBVISOR_REDIS_PASSWORD": users.passwords[worker]})
    try:
        wait_until(lambda: "the ACL user lacks a command or key pattern" in sup.logs(),
                   timeout=20, what="the worker to log the refused BLPOP")
        assert sup.proc.poll() is None and "'blpop'" in sup.logs()
    finally:
        sup.stop()
    logs = sup.logs()
    assert "Traceback" not in logs
    for secret in users.passwords.values():
        for text in (logs, *messages):
            assert secret not in text


def test_readme_acl_lines_match_these(namespace):
    """Once the README carries the ACL lines, they must be the ones tested here."""
    readme = (ROOT / "README.md").read_text()
    found = re.findall(r"^ACL SETUSER jobvisor-(\w+) reset on >\S+ (.+)$", readme, re.M)
    if not found:
        pytest.skip("README.md has no `ACL SETUSER jobvisor-<role>` lines yet")
    assert {role: text.split() for role, text in found} == {
        role: rules(role, "jobvisor") for role in ROLES}


def test_a_read_only_dashboard_runs_under_the_dashboard_acl(users, tmp_path, namespace):
    """Every page and read of the dashboard with read_only = true, as the read-only
    dashboard user: nothing refused by Redis, and actions refused by the dashboard."""
    import httpx

    from tests.web import Dashboard

    worker = users.add("worker", rules("worker", namespace))
    dashboard = users.add("dashboard", rules("dashboard", namespace))
    w = users.broker(worker)
    Queue("default", w).options(max_attempts=1).enqueue_many(
        ("tests.jobfuncs:key_error",) for _ in range(3))
    Worker(["default"], broker=w).run_until_empty()
    dead = w.client.zrange(w.keys.dead("default"), 0, 0)[0].decode()
    d = Dashboard(tmp_path, users.url(dashboard), namespace, settings="read_only = true\n",
                  env={"JOBVISOR_REDIS_PASSWORD": users.passwords[dashboard]})
    try:
        html = {"Accept": "text/html"}
        for path in ("/", "/queues/default?state=dead", "/queues/default?state=dead&text=key",
                     f"/jobs/{dead}", "/dead", "/hosts", "/queues/default/clear",
                     "/api/queues", "/api/overview", "/api/queues/default/jobs?state=dead",
                     f"/api/jobs/{dead}", "/api/queues/default/dead-groups", "/api/hosts",
                     "/api/openapi.json"):
            reply = httpx.get(d.base + path, headers=html, timeout=10)
            assert reply.status_code == 200, (path, reply.status_code, reply.text[:300])
        assert 'name="ids"' not in httpx.get(d.base + "/queues/default?state=dead",
                                             headers=html).text
        refused = httpx.post(f"{d.base}/api/queues/default/jobs/requeue",
                             json={"all_matching": True, "state": "dead"},
                             headers={"Authorization": "Bearer any:thing"})
        assert refused.status_code == 403
        ready = httpx.get(f"{d.base}/readyz", timeout=10).json()
        assert [c["name"] for c in ready["checks"]][:2] == ["redis", "supervisors"]
        assert ready["checks"][0]["ok"]
        assert [d for d in users.denied() if d[2] not in HARMLESS] == []
        assert Queue("default", w).counts()["dead"] == 3
    finally:
        d.stop()
