"""Health checks: the library's verdicts, `jobvisor health`'s exit codes, and the
supervisor's /healthz and /readyz through a Redis outage, against real servers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

import tests.jobfuncs  # noqa: F401  (registers the functions the in-process worker runs)
from jobs import Broker, Queue, RedisSettings, Worker
from jobs.cluster import pause, supervisors
from jobs.health import Health, check_health, response
from tests.helpers import wait_until
from tests.procs import Running, start_and_wait
from tests.server import ValkeyServer

ROOT = Path(__file__).parent.parent


def by_name(health: Health) -> dict[str, Any]:
    return {c.name: c for c in health.checks}


def make_dead(broker: Broker, queue: str, n: int) -> None:
    """``n`` dead jobs in ``queue``, failed by a worker in this process."""
    q = Queue(queue, broker)
    for _ in range(n):
        q.options(max_attempts=1).enqueue("tests.jobfuncs:always_fails")
    assert Worker([queue], broker=broker).run_until_empty()["dead"] == n


def live(sup: Any, **kw: Any) -> Running:
    """A supervisor whose workers are up and whose entry in Redis is published (its
    duties write it a moment after the workers start)."""
    r = start_and_wait(sup, **kw)
    wait_until(lambda: supervisors(r.broker), timeout=10, what="the supervisor's entry")
    return r


def lag_of(broker: Broker, queue: str) -> float:
    return float(by_name(check_health(broker, max_lag=1000.0))[f"lag:{queue}"].value or 0)


# -- the library ---------------------------------------------------------------------------

def test_every_check_passes_with_a_live_supervisor(sup):
    r = live(sup)
    health = check_health(r.broker, max_lag=60.0, max_dead=10)
    assert health.ok, health
    checks = by_name(health)
    assert list(checks) == ["redis", "supervisors", "lag", "dead"]  # no queue yet
    assert checks["redis"].value < 1.0 and "answered PING" in checks["redis"].detail
    assert checks["supervisors"].value == 1
    assert f":{r.proc.pid}" in checks["supervisors"].detail
    assert response(health)[0] == 200
    Queue("default", r.broker).enqueue("tests.jobfuncs:add", 1, 2).result(timeout=10)
    checks = by_name(check_health(r.broker, max_lag=60.0, max_dead=10))
    assert checks["lag:default"].ok and checks["lag:default"].value is None
    assert checks["dead:default"].ok and checks["dead:default"].value == 0
    # One supervisor by its id, as its own /readyz asks.
    ident = checks["supervisors"].detail.rpartition(": ")[2]
    assert ident.endswith(f":{r.proc.pid}")
    own = by_name(check_health(r.broker, supervisor=ident))
    assert list(own) == ["redis", "supervisor"] and own["supervisor"].ok
    gone = by_name(check_health(r.broker, supervisor="elsewhere:1"))["supervisor"]
    assert not gone.ok and "supervisor elsewhere:1 has no live entry" in gone.detail


def test_no_live_supervisor_fails(broker):
    health = check_health(broker)
    assert not health.ok
    checks = by_name(health)
    assert checks["redis"].ok
    assert not checks["supervisors"].ok and checks["supervisors"].value == 0
    assert broker.keys.ns in checks["supervisors"].detail
    status, body = response(health)
    assert status == 503
    assert json.loads(body)["status"] == "fail"


def test_lag_and_dead_thresholds_fail_naming_the_queue(broker):
    Queue("side", broker).enqueue("tests.jobfuncs:add", 1, 2)  # nothing serves "side"
    wait_until(lambda: lag_of(broker, "side") > 0.05, timeout=5,
               what="the queued job to be older than max_lag")
    lag = by_name(check_health(broker, max_lag=0.05))["lag:side"]
    assert not lag.ok and "queue 'side'" in lag.detail and "more than max_lag 0.05 s" in lag.detail
    make_dead(broker, "deadq", 3)
    checks = by_name(check_health(broker, max_dead=2))
    assert "lag:side" not in checks  # max_lag not given: not checked
    assert not checks["dead:deadq"].ok and checks["dead:deadq"].value == 3
    assert "queue 'deadq' holds 3 dead jobs, more than max_dead 2" in checks["dead:deadq"].detail
    assert checks["dead:side"].ok and checks["dead:side"].value == 0
    assert by_name(check_health(broker, max_dead=3))["dead:deadq"].ok
    assert "dead:deadq" not in by_name(check_health(broker, max_dead=0))  # 0: off


def test_a_paused_queue_is_not_held_to_max_lag(broker):
    Queue("held", broker).enqueue("tests.jobfuncs:add", 1, 2)
    pause("held", broker)
    wait_until(lambda: lag_of(broker, "held") > 0.05, timeout=5,
               what="the queued job to be older than max_lag")
    lag = by_name(check_health(broker, max_lag=0.05))["lag:held"]
    assert lag.ok and "paused" in lag.detail


@pytest.mark.parametrize("fault", ["stopped", "stalled"])
def test_redis_down_fails_fast_and_names_the_checks_not_run(tmp_path, fault):
    srv = ValkeyServer(tmp_path / "own")
    srv.start()
    broker = Broker(srv.url, redis_settings=RedisSettings(namespace="down"))
    try:
        assert by_name(check_health(broker))["redis"].ok
        if fault == "stopped":
            srv.stop()
        else:
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        health = check_health(broker, max_lag=10.0, max_dead=5, redis_timeout=0.5)
        took = time.monotonic() - started
    finally:
        if srv.proc is not None and fault == "stalled":
            srv.proc.send_signal(signal.SIGCONT)
        srv.stop()
    # A refused connection fails at once, a stalled server after one redis_timeout; the
    # broker's own client would add its retries (0.7 s of back-off) and 5 s timeouts.
    assert took < (0.5 if fault == "stopped" else 1.5), f"took {took:.2f} s"
    assert not health.ok
    checks = by_name(health)
    assert list(checks) == ["redis", "supervisors", "lag", "dead"]
    assert not checks["redis"].ok and "cannot reach Redis" in checks["redis"].detail
    assert "bound 0.5 s" in checks["redis"].detail
    for name in ("supervisors", "lag", "dead"):
        assert not checks[name].ok and checks[name].detail == "not run: Redis did not answer"


def test_a_refused_command_fails_its_check_and_the_next_ones_still_run(tmp_path):
    srv = ValkeyServer(tmp_path / "acl")
    srv.start()
    admin = redis.Redis(unix_socket_path=str(srv.socket))
    try:
        admin.execute_command("ACL", "SETUSER", "nomget", "reset", "on", ">pw", "~*", "+@all",
                              "-mget")
        (tmp_path / "pw").write_text("pw\n")
        broker = Broker(f"unix://nomget@{srv.socket}", redis_settings=RedisSettings(
            namespace="acl", password_file=str(tmp_path / "pw")))
        admin.zadd(broker.keys.supervisor_ids(), {"host:1": time.time() * 1000})
        make_dead(broker, "side", 2)
        health = check_health(broker, max_dead=1)
    finally:
        admin.close()
        srv.stop()
    checks = by_name(health)
    assert checks["redis"].ok
    assert not checks["supervisors"].ok and "NOPERM" in checks["supervisors"].detail
    assert not checks["dead:side"].ok and checks["dead:side"].value == 2


# -- jobvisor health -----------------------------------------------------------------------

def health_cli(config: Path, *args: str, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor", "--config", str(config),
                           "health", *args], capture_output=True, text=True, timeout=30,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def test_health_command_exit_codes_and_json(sup):
    r = live(sup)
    ok = health_cli(r.config)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0].startswith("ok    redis        answered PING in ")
    assert lines[1].startswith("ok    supervisors  1 live supervisor: ")
    assert f":{r.proc.pid}" in lines[1]
    make_dead(r.broker, "side", 2)
    failed = health_cli(r.config, "--max-dead", "1")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "FAIL  dead:side    queue 'side' holds 2 dead jobs, more than max_dead 1" \
        in failed.stdout
    # The default comes from [health] (here through the environment); a flag overrides it.
    assert health_cli(r.config, env={"JOBVISOR_HEALTH_MAX_DEAD": "1"}).returncode == 1
    assert health_cli(r.config, "--max-dead", "0",
                      env={"JOBVISOR_HEALTH_MAX_DEAD": "1"}).returncode == 0
    as_json = health_cli(r.config, "--max-dead", "1", "--json")
    assert as_json.returncode == 1
    body = json.loads(as_json.stdout)
    assert body["status"] == "fail"
    assert {c["name"]: c["ok"] for c in body["checks"]} == {
        "redis": True, "supervisors": True, "dead:side": False}
    assert [c["value"] for c in body["checks"] if c["name"] == "dead:side"] == [2]


def test_health_command_without_redis_prints_the_checks_and_exits_4(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'[redis]\nurl = "unix://{tmp_path}/nothing.sock"\n'
                      "[health]\nmax_lag = 30.0\n")
    started = time.monotonic()
    out = health_cli(config)
    assert time.monotonic() - started < 10  # an interpreter start and one refused connect
    assert out.returncode == 4, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("FAIL  redis        no answer to PING (bound 1 s): cannot reach")
    assert lines[1:] == ["FAIL  supervisors  not run: Redis did not answer",
                         "FAIL  lag          not run: Redis did not answer"]
    assert json.loads(health_cli(config, "--json").stdout)["status"] == "fail"


def test_health_command_bad_arguments_are_usage_errors(tmp_path):
    out = health_cli(tmp_path / "absent.toml", "--max-lag", "soon")
    assert out.returncode == 2 and "not a number of seconds" in out.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[health]\nmax_dead = -1\n")
    out = health_cli(bad)
    assert out.returncode == 2 and "$.health.max_dead" in out.stderr


# -- the supervisor's /healthz and /readyz -------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def failed_checks(body: Any) -> set[str]:
    return {c["name"] for c in body["checks"] if not c["ok"]}


def test_readyz_follows_a_redis_outage_while_healthz_stays_up(tmp_path, namespace):
    srv = ValkeyServer(tmp_path / "own")
    srv.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (tmp_path / "s").mkdir()
    r = Running(tmp_path / "s", srv, namespace,
                tail=f'[metrics]\naddress = "127.0.0.1:{port}"\n[health]\nredis_timeout = 0.5\n')
    try:
        r.wait_workers(2)
        wait_until(lambda: get(f"{base}/readyz")[0] == 200, timeout=10, what="ready")
        assert get(f"{base}/healthz") == (200, {"status": "ok"})
        status, body = get(f"{base}/readyz")
        assert status == 200 and body["status"] == "ok" and [c["name"] for c in body["checks"]] == [
            "redis", "supervisor"]  # its own entry: one GET, no SCAN
        assert get(f"{base}/nowhere")[0] == 404
        srv.stop()
        _, body = wait_until(lambda: (s := get(f"{base}/readyz"))[0] == 503 and s,
                                  timeout=10, what="/readyz to fail")
        assert body["status"] == "fail" and failed_checks(body) == {"redis", "supervisor"}
        assert "cannot reach Redis" in body["checks"][0]["detail"]
        assert get(f"{base}/healthz") == (200, {"status": "ok"})
        assert r.proc.poll() is None
        srv.start()
        wait_until(lambda: get(f"{base}/readyz")[0] == 200, timeout=15, what="ready again")
        assert r.proc.poll() is None
    finally:
        r.stop()
        srv.stop()


def test_a_stalled_redis_holds_only_the_readyz_request(tmp_path, namespace):
    """Redis stops answering (SIGSTOP): /readyz answers 503 after about redis_timeout,
    /healthz answers at once meanwhile, and the supervisor's loop still obeys signals."""
    srv = ValkeyServer(tmp_path / "own")
    srv.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (tmp_path / "s").mkdir()
    r = Running(tmp_path / "s", srv, namespace, workers=1,
                tail=f'[metrics]\naddress = "127.0.0.1:{port}"\n[health]\nredis_timeout = 1.0\n')
    stalled = False
    try:
        r.wait_workers(1)
        wait_until(lambda: get(f"{base}/readyz")[0] == 200, timeout=10, what="ready")
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGSTOP)
        stalled = True
        readyz: list[tuple[int, Any]] = []
        started = time.monotonic()
        request = threading.Thread(target=lambda: readyz.append(get(f"{base}/readyz")))
        request.start()
        assert get(f"{base}/healthz", timeout=0.5) == (200, {"status": "ok"})
        r.proc.send_signal(signal.SIGTTIN)  # the loop forks a worker with Redis stalled
        r.wait_workers(2)
        request.join(timeout=10)
        took = time.monotonic() - started
        assert readyz and readyz[0][0] == 503 and "redis" in failed_checks(readyz[0][1])
        assert took < 5, f"/readyz took {took:.2f} s"
    finally:
        if stalled and srv.proc is not None:
            srv.proc.send_signal(signal.SIGCONT)
        r.stop()
        srv.stop()


def test_readyz_applies_the_health_thresholds(sup):
    port = free_port()
    r = live(sup, tail=f'[metrics]\naddress = "127.0.0.1:{port}"\n'
                                 "[health]\nmax_dead = 1\n")
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: get(f"{base}/readyz")[0] == 200, timeout=10, what="ready")
    make_dead(r.broker, "side", 2)
    status, body = get(f"{base}/readyz")
    assert status == 503 and failed_checks(body) == {"dead:side"}
    text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    assert "jobvisor_queue_jobs" in text  # /metrics is still prometheus-client's exposition
