"""The scenarios of the performance issue; each returns its figures as a dict."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psutil

from bench import ceiling
from bench.env import Bench, children, cpu_seconds, wait_for
from jobs import Broker, Job, JobState, Queue, RedisSettings, Worker
from jobs.cluster import pause, resume
from tests.server import ValkeyServer


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def _drained(q: Queue) -> bool:
    c = q.counts()
    return c["queued"] == 0 and c["active"] == 0 and c["scheduled"] == 0


def _wait_drained(q: Queue, last: list[Job]) -> None:
    """Block on the results of the last jobs claimed (the last to finish, give or take
    one per worker), then confirm the queue is empty: no polling interval in the figure."""
    for job in last:
        job.result(timeout=600)
    wait_for(lambda: _drained(q), 600, 0.001)


def throughput(b: Bench, n: int, claim_batch: int | None = None) -> dict[str, Any]:
    """Drain ``n`` queued no-op jobs; the bare-loop ceiling is measured just before and
    just after (the machine's speed drifts within seconds: the ratio uses their mean).
    ``claim_batch``: the workers' ``[worker] claim_batch`` (None: the default)."""
    socket = str(b.server.socket)
    one_before = ceiling.drain_rate(socket, n, one_trip=True)
    broker = b.broker()
    sup = b.supervisor(broker, worker=f"claim_batch = {claim_batch}" if claim_batch else "")
    q = Queue("default", broker)
    pause("default", broker)  # all queued before the clock starts, none run early
    queued = q.enqueue_many([("examples.cpu:noop",) for _ in range(n)])
    start = time.perf_counter()
    resume("default", broker)
    _wait_drained(q, queued[-2:])
    rate = n / (time.perf_counter() - start)
    b.stop(sup)
    one = (one_before + ceiling.drain_rate(socket, n, one_trip=True)) / 2
    two = ceiling.drain_rate(socket, n, one_trip=False)
    return {"jobs_per_s": rate, "ceiling_one_trip": one, "ceiling_two_trips": two,
            "ratio_one_trip": rate / one}


def enqueue_one_by_one(b: Bench, n: int) -> dict[str, Any]:
    """Enqueue ``n`` jobs one call at a time, between two PING loops (ratio: their mean)."""
    q = Queue("default", b.broker())
    ping_before = ceiling.ping_rate(str(b.server.socket), n)
    start = time.perf_counter()
    for _ in range(n):
        q.enqueue("examples.cpu:noop")
    rate = n / (time.perf_counter() - start)
    ping = (ping_before + ceiling.ping_rate(str(b.server.socket), n)) / 2
    return {"jobs_per_s": rate, "ping_per_s": ping, "ratio": rate / ping}


def bulk_enqueue(b: Bench, n: int) -> dict[str, Any]:
    q = Queue("default", b.broker())
    calls = [q.call("examples.cpu:noop") for _ in range(n)]
    raw_before = ceiling.pipelined_write_rate(str(b.server.socket), n)
    start = time.perf_counter()
    q.enqueue_many(calls)
    rate = n / (time.perf_counter() - start)
    raw = (raw_before + ceiling.pipelined_write_rate(str(b.server.socket), n)) / 2
    return {"jobs_per_s": rate, "raw_pipelined_per_s": raw, "ratio": rate / raw}


def cpu_efficiency(b: Bench, n: int, seconds: float = 0.05,
                   claim_ahead: bool = True) -> dict[str, Any]:
    """``n`` CPU-bound jobs of ``seconds`` on 2 workers: the share of the time they ran.
    ``claim_ahead``: the workers' ``[worker] claim_ahead``."""
    broker = b.broker()
    sup = b.supervisor(broker, worker="" if claim_ahead else "claim_ahead = false")
    q = Queue("default", broker)
    pause("default", broker)
    queued = q.enqueue_many([q.call("examples.cpu:spin", seconds) for _ in range(n)])
    start = time.perf_counter()
    resume("default", broker)
    _wait_drained(q, queued[-2:])
    elapsed = time.perf_counter() - start
    b.stop(sup)
    ideal = n * seconds / 2
    return {"elapsed_s": elapsed, "ideal_s": ideal, "efficiency": ideal / elapsed}


def latency(b: Bench, n: int) -> dict[str, Any]:
    broker = b.broker()
    sup = b.supervisor(broker)
    q = Queue("default", broker)
    lat = []
    for _ in range(n):
        sent = time.time()
        started = q.enqueue("bench.jobs:stamp").result(timeout=10)
        lat.append(started - sent)  # one host, one clock: from enqueue() to the job's first line
    b.stop(sup)
    rt = 1 / ceiling.ping_rate(str(b.server.socket), 2000)
    return {"p50_ms": _pct(lat, 50) * 1000, "p99_ms": _pct(lat, 99) * 1000,
            "round_trip_ms": rt * 1000}


def delayed(b: Bench, n: int, first: float, spread: float) -> dict[str, Any]:
    """``n`` jobs due from ``first`` seconds on, spread evenly over ``spread`` seconds."""
    broker = b.broker()
    sup = b.supervisor(broker)
    q = Queue("default", broker)
    delays = [first + spread * i / n for i in range(n)]
    jobs_ = [(q.options(delay=d).enqueue("examples.cpu:noop"), d) for d in delays]
    for j, _ in jobs_:
        j.result(timeout=30)
    late = []
    for j, d in jobs_:
        r = j.refresh().record
        late.append((r.started_at or 0) - ((r.enqueued_at or 0) + d))
    b.stop(sup)
    return {"p50_ms": _pct(late, 50) * 1000, "p99_ms": _pct(late, 99) * 1000,
            "max_ms": max(late) * 1000}


def hard_timeout(b: Bench, n: int) -> dict[str, Any]:
    broker = b.broker()
    sup = b.supervisor(broker)
    q = Queue("default", broker)
    out: dict[str, Any] = {}
    for fn in ("bench.jobs:forever", "bench.jobs:gil_forever"):
        kill, account = [], []
        for _ in range(n):
            j = q.options(timeout=0.5).enqueue(fn)
            wait_for(lambda j=j: j.refresh().state is JobState.DEAD, 30, 0.002)
            e = j.errors[-1]
            kill.append(e.duration - 0.5)  # measured by the supervisor at the kill
            r = j.record
            account.append((r.finished_at or 0) - (r.started_at or 0) - 0.5)
        label = "python" if fn.endswith(":forever") else "gil"
        out[f"{label}_kill_p99_ms"] = _pct(kill, 99) * 1000
        out[f"{label}_kill_min_ms"] = min(kill) * 1000
        out[f"{label}_accounted_p99_ms"] = _pct(account, 99) * 1000
    b.stop(sup)
    return out


def crash_recovery(b: Bench, n: int) -> dict[str, Any]:
    broker = b.broker()
    sup = b.supervisor(broker)
    q = Queue("default", broker)
    took = []
    for _ in range(n):
        j = q.options(max_attempts=5).enqueue("examples.cpu:spin", 60)
        wait_for(lambda j=j: j.refresh().state is JobState.ACTIVE, 10, 0.001)
        # The worker running this job (its title names it): an earlier, canceled job may
        # still be running on the other worker for a moment.
        busy = wait_for(lambda j=j: [c for c in children(sup) if j.id in " ".join(c.cmdline())],
                        10, 0.001)
        t0 = time.monotonic()
        os.kill(busy[0].pid, signal.SIGKILL)
        wait_for(lambda j=j: j.refresh().state is not JobState.ACTIVE, 10, 0.0005)
        took.append(time.monotonic() - t0)
        j.cancel()
        wait_for(lambda: len(children(sup)) == 2, 10)
    b.stop(sup)
    return {"p50_ms": _pct(took, 50) * 1000, "p99_ms": _pct(took, 99) * 1000}


def host_loss(b: Bench, lease: float = 3.0) -> dict[str, Any]:
    broker = b.broker()
    extra = f"lease_timeout = {lease}"
    a = b.supervisor(broker, extra=extra)
    q = Queue("default", broker)
    j = q.options(max_attempts=3).enqueue("examples.cpu:spin", 30)
    wait_for(lambda: j.refresh().state is JobState.ACTIVE, 10, 0.001)
    survivor = b.supervisor(broker, extra=extra)
    t0 = time.monotonic()
    a.kill()
    a.wait()
    wait_for(lambda: j.refresh().state is not JobState.ACTIVE, lease + 10, 0.005)
    took = time.monotonic() - t0
    j.cancel()
    b.stop(survivor)
    return {"reclaimed_after_s": took, "lease_s": lease, "over_lease_s": took - lease}


def scale_up(b: Bench, n: int) -> dict[str, Any]:
    broker = b.broker()
    # n workers more than the one it starts with: above the ceiling derived from a small
    # machine's cores (4 per core), so it is set.
    sup = b.supervisor(broker, workers=1, extra=f"max_workers = {n + 1}")
    q = Queue("default", broker)
    took = []
    for i in range(n):
        before = {c.pid for c in children(sup)}
        q.enqueue_many([q.call("examples.cpu:spin", 0.3) for _ in range(len(before) + 1)])
        t0 = time.monotonic()
        sup.send_signal(signal.SIGTTIN)
        new = wait_for(lambda before=before: [c for c in children(sup) if c.pid not in before
                                              and "busy" in " ".join(c.cmdline())], 10, 0.0005)
        took.append(time.monotonic() - t0)
        wait_for(lambda: _drained(q), 30, 0.01)
        _ = new, i
    b.stop(sup)
    return {"p50_ms": _pct(took, 50) * 1000, "p99_ms": _pct(took, 99) * 1000,
            "note": "SIGTTIN to the new worker's title showing its first job"}


def memory(b: Bench, n: int, settle: float) -> dict[str, Any]:
    broker = b.broker()
    before = broker.client.info("memory")["used_memory"]
    Queue("default", broker).enqueue_many([("examples.cpu:noop",) for _ in range(n)])
    after = broker.client.info("memory")["used_memory"]
    broker2 = b.broker()
    sup = b.supervisor(broker2)
    time.sleep(settle)  # let the idle pool settle before measuring
    uss = 0
    for p in [psutil.Process(sup.pid), *children(sup)]:
        uss += p.memory_full_info().uss
    b.stop(sup)
    return {"bytes_per_queued_job": (after - before) / n, "pool_uss_mib": uss / 2**20}


def _claim_seconds(worker: Worker, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        job = worker.claim()
        assert job is not None
        worker.broker.complete(job, b"\xc0", 60)
    return time.perf_counter() - start


def deep_queue(b: Bench, deep: int, n: int, rounds: int = 6) -> dict[str, Any]:
    """Claim rate from a server holding ``deep`` queued jobs vs one holding 1,000, in
    interleaved rounds (drift in the machine's speed then hits both alike)."""
    shallow_server = ValkeyServer(b.tmp / "shallow")
    shallow_server.start()
    try:
        shallow = Broker(shallow_server.url, redis_settings=RedisSettings(namespace="shallow"))
        deep_broker = b.broker()
        for broker, depth in ((shallow, 1_000), (deep_broker, deep)):
            q = Queue("deep", broker)
            for i in range(0, depth + n, 10_000):
                q.enqueue_many([("examples.cpu:noop",)] * min(10_000, depth + n - i))
        workers = [Worker(["deep"], broker=broker, lease=3600)
                   for broker in (shallow, deep_broker)]
        seconds = [0.0, 0.0]
        for r in range(rounds):
            # Whichever goes second in a round runs slower here (the first server's
            # background work after the burst): the order alternates to cancel that out.
            for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                seconds[i] += _claim_seconds(workers[i], n // rounds)
    finally:
        shallow_server.stop()
    rates = [(n // rounds * rounds) / s for s in seconds]
    return {"claims_per_s_shallow": rates[0], "claims_per_s_deep": rates[1],
            "depth": deep, "ratio": rates[1] / rates[0]}


def idle_cost(b: Bench, seconds: float, settle: float) -> dict[str, Any]:
    broker = b.broker()
    sup = b.supervisor(broker)
    time.sleep(settle)  # let the idle pool settle before measuring
    pids = [sup.pid, *(c.pid for c in children(sup))]
    calls0 = sum(v["calls"] for v in broker.client.info("commandstats").values())
    cpu0, t0 = cpu_seconds(pids), time.monotonic()
    time.sleep(seconds)
    cpu1, t1 = cpu_seconds(pids), time.monotonic()
    calls1 = sum(v["calls"] for v in broker.client.info("commandstats").values())
    b.stop(sup)
    return {"cpu_percent_of_a_core": (cpu1 - cpu0) / (t1 - t0) * 100,
            "redis_commands_per_s": (calls1 - calls0 - 1) / (t1 - t0),
            "seconds": seconds}

