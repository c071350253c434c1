"""Timeouts, stalls, crashes, recycling, scaling and sharing, against real supervisors."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter

import psutil
import pytest

from jobs import ErrorKind, JobState, Queue
from jobs.cluster import forget_stale_ids, publish_entry, supervisors, withdraw_entry
from tests.helpers import wait_until
from tests.procs import start_and_wait as _start


def test_soft_timeout_raises_inside_the_job(sup):
    r = _start(sup)
    j = Queue("default", r.broker).enqueue("tests.jobfuncs:soft_limited")
    assert j.result(timeout=15) == "cleaned up"
    assert 0.4 <= (j.refresh().finished_at - j.started_at).total_seconds() < 3


def test_stalled_heartbeat_kills_gil_holding_job(sup):
    r = _start(sup, extra="heartbeat_timeout = 2.0")
    j = Queue("default", r.broker).enqueue("tests.jobfuncs:catastrophic_regex")
    wait_until(lambda: j.refresh().state is JobState.DEAD, timeout=30)
    assert j.error.type == "HeartbeatLost" and "heartbeat lost" in j.error.message
    r.wait_workers(2)


def test_hard_timeout_on_a_sleeping_job(sup):
    r = _start(sup)
    j = Queue("default", r.broker).options(timeout=0.5, max_attempts=1).enqueue(
        "examples.cpu:spin", 30)
    wait_until(lambda: j.refresh().state is JobState.DEAD, timeout=15)
    assert j.error.message == "hard timeout after 0.5 s"
    assert 0.5 <= j.error.duration < 1.5


def test_kill_grace_sends_sigterm_first(sup):
    r = _start(sup, extra="kill_grace = 0.5")
    j = Queue("default", r.broker).options(timeout=0.5, max_attempts=1).enqueue(
        "examples.cpu:spin", 30)
    wait_until(lambda: j.refresh().state is JobState.DEAD, timeout=15)
    assert j.error.type == "HardTimeout"
    wait_until(lambda: "was killed by SIGKILL" in r.logs(), timeout=10)


def test_segfault_is_accounted(sup):
    r = _start(sup)
    j = Queue("default", r.broker).enqueue("tests.jobfuncs:segfault")
    wait_until(lambda: j.refresh().state is JobState.DEAD, timeout=15)
    assert j.error.kind is ErrorKind.CRASH and "SIGSEGV" in j.error.message
    r.wait_workers(2)


def test_address_space_limit_gives_memory_error(sup):
    r = _start(sup, extra="job_memory_limit = 400")
    q = Queue("default", r.broker)
    j = q.enqueue("tests.jobfuncs:allocate", 2000)
    wait_until(lambda: j.refresh().state is JobState.DEAD, timeout=15)
    assert j.error.type == "MemoryError"
    assert q.enqueue("tests.jobfuncs:allocate", 10).result(timeout=10) == 10 * 2**20


def test_recycling_by_job_count(sup):
    r = _start(sup, workers=1, extra="max_jobs_per_child = 3")
    q = Queue("default", r.broker)
    pids = [q.enqueue("tests.jobfuncs:worker_pid").result(timeout=15) for _ in range(7)]
    runs = [len(list(g)) for _, g in __import__("itertools").groupby(pids)]
    assert runs == [3, 3, 1]
    wait_until(lambda: "recycles after 3 jobs" in r.logs(), timeout=5)


def test_recycling_by_memory(sup):
    r = _start(sup, workers=1, extra="max_memory_per_child = 100")
    q = Queue("default", r.broker)
    first = q.enqueue("tests.jobfuncs:leak", 150).result(timeout=15)
    second = q.enqueue("tests.jobfuncs:leak", 1).result(timeout=15)
    assert first != second
    assert "above max_memory_per_child" in r.logs()


def test_crash_loop_halts_after_repeated_boot_failures(sup):
    r = sup(modules='["tests.bootcrash"]', extra="max_boot_failures = 3")
    assert r.proc.wait(60) == 3
    assert "3 consecutive worker boot failures" in r.logs()
    assert r.logs().count("failed to boot") == 3


def test_autoscale_grows_with_backlog_and_shrinks_when_idle(sup):
    r = sup(workers=1, extra="min_workers = 1\nmax_workers = 3\nidle_timeout = 1.0")
    r.wait_workers(1)
    q = Queue("default", r.broker)
    jobs_ = [q.enqueue("examples.cpu:spin", 0.5) for _ in range(12)]
    wait_until(lambda: len(r.children()) == 3, timeout=20)
    assert "autoscale" in r.logs() and "growing to 3" in r.logs()
    for j in jobs_:
        j.result(timeout=30)
    wait_until(lambda: len(r.children()) == 1, timeout=30)
    assert "shrinking to 1" in r.logs()


def test_registry_entry_describes_the_pool(sup):
    r = _start(sup)
    key = wait_until(lambda: r.broker.client.keys(r.broker.keys.supervisors_pattern()), 10)[0]

    def settled():
        e = json.loads(r.broker.client.get(key))
        states = [w["state"] for w in e["workers"]]
        return e if len(states) == 2 and set(states) <= {"idle", "busy"} else None

    entry = wait_until(settled, timeout=10)
    assert entry["pid"] == r.proc.pid and entry["config_version"] == 1
    assert {w["state"] for w in entry["workers"]} <= {"idle", "busy"}
    assert len(entry["workers"]) == 2 and all(w["rss"] > 0 for w in entry["workers"])
    assert 0 < r.broker.client.pttl(key) <= 5000
    assert [e["pid"] for e in supervisors(r.broker)] == [r.proc.pid]
    r.stop()
    assert r.broker.client.keys(r.broker.keys.supervisors_pattern()) == []
    assert r.broker.client.zcard(r.broker.keys.supervisor_ids()) == 0
    assert supervisors(r.broker) == []


def test_supervisors_are_listed_from_their_ids_without_a_scan(broker):
    """A database of a million jobs must not make every overview refresh walk it."""
    pipe = broker.client.pipeline(transaction=False)
    for ident in ("host-a:1", "host-b:2"):
        publish_entry(pipe, broker, ident, json.dumps({"workers": []}).encode(), 10_000)
    pipe.execute()
    broker.client.delete(broker.keys.supervisor("host-b:2"))  # its entry expired: gone
    an_hour_ago = (time.time() - 3601) * 1000
    broker.client.zadd(broker.keys.supervisor_ids(), {"host-c:3": an_hour_ago})  # killed

    def scans() -> int:
        return int(broker.client.info("commandstats").get("cmdstat_scan", {}).get("calls", 0))

    before = scans()
    assert [e["id"] for e in supervisors(broker)] == ["host-a:1"]
    assert scans() == before
    assert forget_stale_ids(broker) == 1
    members = broker.client.zrange(broker.keys.supervisor_ids(), 0, -1)
    assert sorted(members) == [b"host-a:1", b"host-b:2"]
    withdraw_entry(broker, "host-a:1")
    assert supervisors(broker) == []


def test_children_exit_when_supervisor_is_killed(sup):
    r = _start(sup)
    children = r.wait_workers(2)
    r.proc.send_signal(signal.SIGKILL)
    r.proc.wait(10)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []


def test_two_supervisors_share_a_queue_without_duplicates(sup, tmp_path):
    a = _start(sup)
    b = _start(sup)
    pids_a = {p.pid for p in a.children()}
    pids_b = {p.pid for p in b.children()}
    ledger = tmp_path / "ledger.txt"
    q = Queue("default", a.broker)
    jobs_ = q.enqueue_many([q.call("tests.jobfuncs:ledger", str(ledger), f"j{i}", 0.002)
                            for i in range(300)])
    for j in jobs_:
        j.result(timeout=60)
    lines = ledger.read_text().split()
    assert len(lines) == 300 and set(Counter(lines).values()) == {1}
    ran_on = {int(j.refresh().record.token.split(":")[1]) for j in jobs_}
    assert ran_on & pids_a and ran_on & pids_b and ran_on <= pids_a | pids_b
    assert a.proc.poll() is None and b.proc.poll() is None


def test_long_job_keeps_its_lease(sup):
    r = _start(sup, lease=1.0)
    j = Queue("default", r.broker).enqueue("examples.cpu:spin", 2.5)  # 2.5 leases
    assert j.result(timeout=20) == 2.5
    assert j.refresh().attempts == 1 and j.errors == ()


def test_reload_runs_new_code(sup, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "versioned.py").write_text(
        "from jobs import job\n\n@job\ndef version() -> str:\n    return 'v1'\n")
    r = _start(sup, modules='["versioned"]', env={"PYTHONPATH": str(code)})
    q = Queue("default", r.broker)
    assert q.enqueue("versioned:version").result(timeout=10) == "v1"
    (code / "versioned.py").write_text(
        "from jobs import job\n\n@job\ndef version() -> str:\n    return 'v2'\n")
    old = {p.pid for p in r.children()}
    r.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: not ({p.pid for p in r.children()} & old) and len(r.children()) == 2,
               timeout=20)
    assert q.enqueue("versioned:version").result(timeout=10) == "v2"


def test_reload_with_broken_code_keeps_old_code(sup, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "versioned.py").write_text(
        "from jobs import job\n\n@job\ndef version() -> str:\n    return 'v1'\n")
    r = _start(sup, modules='["versioned"]', env={"PYTHONPATH": str(code)})
    (code / "versioned.py").write_text("this is not python\n")
    r.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in r.logs(), timeout=10)
    assert "cannot import job module 'versioned'" in r.logs()
    assert Queue("default", r.broker).enqueue("versioned:version").result(timeout=10) == "v1"


def test_workers_ride_out_a_redis_outage(tmp_path, namespace):
    from tests.procs import Running
    from tests.server import ValkeyServer

    srv = ValkeyServer(tmp_path / "own")
    srv.start()
    (tmp_path / "s").mkdir()
    r = Running(tmp_path / "s", srv, namespace)
    try:
        r.wait_workers(2)
        q = Queue("default", r.broker)
        j = q.enqueue("examples.cpu:spin", 1.0)
        wait_until(lambda: j.refresh().state is JobState.ACTIVE, timeout=10)
        srv.stop()  # the job finishes while Redis is down: its outcome must wait, not vanish
        wait_until(lambda: "retrying" in r.logs(), timeout=10)
        srv.start()
        assert j.result(timeout=30) == 1.0
        assert j.refresh().attempts == 1
        assert q.enqueue("tests.jobfuncs:add", 1, 1).result(timeout=15) == 2
        assert r.proc.poll() is None
    finally:
        r.stop()
        srv.stop()


@pytest.mark.parametrize(("function", "state", "error"), [
    ("examples.cpu:spin", JobState.COMPLETED, None),
    ("tests.jobfuncs:spin_then_fail", JobState.DEAD, "ValueError"),
])
def test_a_job_that_returned_in_time_is_not_killed_while_redis_is_away(
        tmp_path, namespace, function, state, error):
    """The job returns (a result or an exception) well before its hard deadline, but
    Redis is down: the worker keeps the outcome past the deadline and writes it when
    Redis is back. It is not killed as a hard timeout, and the job is not run again."""
    import time

    from tests.procs import Running
    from tests.server import ValkeyServer

    srv = ValkeyServer(tmp_path / "own")
    srv.start()
    (tmp_path / "s").mkdir()
    r = Running(tmp_path / "s", srv, namespace, workers=1)
    try:
        [worker] = r.wait_workers(1)
        q = Queue("default", r.broker)
        j = q.options(timeout=2.0).enqueue(function, 1.0)
        # Running, not only claimed: the title names the job once it has started.
        wait_until(lambda: j.id in " ".join(worker.cmdline()), timeout=10,
                   what="the worker to run the job")
        started = time.monotonic()
        srv.stop()
        wait_until(lambda: "outcome is kept until Redis takes it" in r.logs(), timeout=10,
                   what="the outcome to wait")
        assert " ".join(worker.cmdline()).startswith("jobvisor: worker finishing")
        # The outage itself (its length is the fault): on past the job's hard deadline.
        threading.Event().wait(max(0.0, started + 3.0 - time.monotonic()))
        srv.start()
        wait_until(lambda: j.refresh().state is state, timeout=30, what=f"{state}")
        assert j.attempts == 1
        assert [e.type for e in j.errors] == ([error] if error else [])
        assert "hard timeout" not in r.logs() and "killed" not in r.logs()
    finally:
        r.stop()
        srv.stop()


def test_after_an_outage_reclaim_waits_a_lease_for_live_hosts_to_renew(tmp_path):
    """The server stalls past the lease: every lease looks expired when it wakes up. The
    supervisor's duties renew first and take nothing back for a lease, so a job whose
    (live) host renews late keeps running; one whose host never renews comes back."""
    import threading

    from jobs import Broker, RedisSettings, Worker
    from supervisor.runtime.duties import Duties
    from tests.server import ValkeyServer

    srv = ValkeyServer(tmp_path / "stalled")
    srv.start()
    duties = None
    try:
        broker = Broker(srv.url, redis_settings=RedisSettings(
            namespace="outage", connect_timeout=0.5, socket_timeout=0.5))
        queue = Queue("default", broker)
        job = queue.enqueue("tests.jobfuncs:add", 1, 2)
        elsewhere = Worker(["default"], broker=broker, lease=1.0)  # another host's worker
        claimed = elsewhere.claim()
        assert claimed is not None and claimed.id == job.id
        rounds = [0]
        round_done = threading.Event()

        def state() -> dict:
            rounds[0] += 1
            round_done.set()
            return {}

        duties = Duties(broker, 1.0, ["default"], list, state, lambda message: None)
        duties.start()
        assert round_done.wait(5)
        srv.proc.send_signal(signal.SIGSTOP)
        try:
            threading.Event().wait(2.0)  # the stall itself: its length is the fault
        finally:
            srv.proc.send_signal(signal.SIGCONT)
        after = rounds[0]
        wait_until(lambda: rounds[0] > after, timeout=10)  # a round of duties since
        assert job.refresh().state is JobState.ACTIVE  # not taken from its host...
        assert broker.renew([(claimed.id, claimed.queue, claimed.token)], 1.0) == []  # ...who renews
        # That host now goes silent for good: its job comes back once its lease runs out.
        wait_until(lambda: job.refresh().state is not JobState.ACTIVE, timeout=10)
        assert job.errors[-1].type == "WorkerLost"
    finally:
        if duties is not None:
            duties.shutdown(timeout=1.0)
        srv.stop()


def test_a_claim_in_flight_when_its_worker_dies_at_shutdown_is_released(tmp_path, namespace):
    """A fast stop kills a worker whose claim (sent behind its blocking wait) took a job
    it had not shown yet: the supervisor's last flush gives that job back, it is not
    left active until its lease runs out."""
    from jobs import Broker, RedisSettings, Worker
    from supervisor.runtime.duties import Duties, InFlight
    from tests.server import ValkeyServer

    srv = ValkeyServer(tmp_path / "server")
    srv.start()
    try:
        broker = Broker(srv.url, redis_settings=RedisSettings(namespace=namespace))
        job = Queue("default", broker).enqueue("tests.jobfuncs:add", 1, 2)
        worker = Worker(["default"], broker=broker, lease=60.0)
        tokens: list[str] = []
        worker.claiming = tokens.append  # what the child writes to its slot
        assert worker.claim() is not None  # the claim went out with tokens[0]...
        token = tokens[0]
        assert job.refresh().state is JobState.ACTIVE
        duties = Duties(broker, 60.0, ["default"], list, dict, lambda message: None)
        duties.settle(InFlight(token))  # ...and its worker died before showing the job
        duties.shutdown(timeout=5.0)
        assert job.refresh().state is JobState.QUEUED
        assert job.attempts == 0
    finally:
        srv.stop()
