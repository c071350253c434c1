"""Chaos 5: the job server runs out of memory (``maxmemory`` with ``noeviction``).

A private server gets a ``maxmemory`` 2 MiB above what it uses, and the test fills it
with jobs carrying 4 KiB of padding while a producer and two workers carry on (then the
limit is pinned below the usage, so it stays full while the checks run). Once full,
Redis refuses every command that could grow memory: an enqueue fails with
``BrokerError`` naming the cause ("used memory > 'maxmemory'") and what to do (free
memory or raise maxmemory). Each Lua
script is refused at its first write, so nothing is half-written: a refused enqueue
leaves no record and no index entry, and every job that exists is in exactly one state
index.

Claims and outcomes still go through while memory is full: their scripts' first write
(ZPOPMIN, ZREM) cannot grow memory, and Redis lets a script that has written once run
to its end, so workers keep draining the queue (and memory grows past ``maxmemory``).
What is refused to workers and supervisors is what starts with a growing write: lease
renewals (ZADD XX), the outcome counters (HINCRBY), the registry entry (SET). The fault
lasts longer than a lease. When memory frees (``maxmemory`` raised), the refused
batches are sent again and everything completes; a job whose lease ran out meanwhile
is reclaimed ("worker lost") and may run twice. The counters' refusal must
neither strand a claimed job nor count a completion twice (the tests at the end).
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from jobs import Broker, BrokerError, Call, EnqueueOptions, Queue, RedisSettings, enqueue_many
from tests.chaos.ledger import (
    Ledger,
    assert_ledger,
    audit,
    counted_completions,
    wait_settled,
)
from tests.chaos.rig import FUNCTION, QUEUE, PrivateServer, Supervisor, job_ids
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
from tests.helpers import INDEXES, wait_until

LEASE = 2.0
HEADROOM = 2 * 2**20
PAD = "x" * 4096


def fill_until_full(filler: Producer, tag: str,
                    batch: int = 20) -> tuple[BrokerError, list[str]]:
    """Enqueue padded batches until Redis refuses one; return the error and that batch."""
    for n in range(0, 100_000, batch):
        ids = job_ids(tag, n, batch)
        try:
            enqueue_many(filler.calls(ids), filler.broker)
        except BrokerError as exc:
            return exc, ids
        filler.acked += ids
    raise AssertionError("the server never filled up")


def indexed_vs_records(broker, ids: list[str]) -> tuple[int, int]:
    """(entries in the queue's state indexes, job records among ``ids``)."""
    pipe = broker.client.pipeline(transaction=False)
    for s in INDEXES:
        pipe.zcard(broker.keys.state_index(QUEUE, s))
    indexed = sum(pipe.execute())
    return indexed, sum(broker.jobs.exist(ids))


def refused_whole(filler: Producer, ids: list[str]) -> None:
    try:
        enqueue_many(filler.calls(ids), filler.broker)
    except BrokerError as exc:
        assert "maxmemory" in str(exc)
    else:
        raise AssertionError("an enqueue succeeded on a full server")
    assert not any(filler.broker.jobs.exist(ids)), "a refused enqueue was written in part"


def fill_and_free(admin, sup, producer: Producer, filler: Producer,
                  cycle: int) -> tuple[str, float, float]:
    """One round of the fault; returns (the refusal's message, seconds full, recovery)."""
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", used + HEADROOM)
    error, refused = fill_until_full(filler, f"fill{cycle}")
    full_at = time.monotonic()
    message = str(error)
    assert "used memory > 'maxmemory'" in message, message
    assert "free memory or raise maxmemory" in message, message
    assert not any(filler.broker.jobs.exist(refused)), "a refused batch was written in part"
    # Usage hovers at the limit (buffers come and go); pin it below usage so the server
    # stays full while the checks below run.
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) // 2)
    single = job_ids(f"single{cycle}", 0, 1)
    refused_whole(filler, single)
    refused_whole(filler, refused)
    ours = producer.acked + filler.acked
    indexed, records = indexed_vs_records(filler.broker, ours)
    assert indexed == records == len(ours), (indexed, records, len(ours))
    # Workers and supervisor meet the refusal too (counters, lease renewals, registry).
    seen = sup.logs().count("used memory > 'maxmemory'")
    wait_until(lambda: sup.logs().count("used memory > 'maxmemory'") >= seen + 2, timeout=20,
               what="workers and supervisor to meet the OOM refusal")
    threading.Event().wait(max(0.0, LEASE + 1.0 - (time.monotonic() - full_at)))  # the fault
    full_for = time.monotonic() - full_at
    admin.config_set("maxmemory", 0)
    recovery = wait_progress(producer.broker, completed_count(producer.broker), timeout=30)
    assert filler.send(refused) and filler.send(single)
    return message, full_for, recovery


def test_memory_full_refuses_cleanly_and_recovers(private_server, namespace, ledger, cluster,
                                                  duration, soak):
    began = time.monotonic()
    srv = private_server()
    admin = srv.client()
    admin.config_set("maxmemory-policy", "noeviction")
    sup = cluster(srv.url, workers=2, lease=LEASE)
    kids = worker_pids(sup)
    producer = Producer(srv.url, namespace, ledger.url, ledger.key, tag="oom", rate=200,
                        work_ms=4.0).start()
    filler = Producer(srv.url, namespace, ledger.url, ledger.key, tag="fill", work_ms=1.0,
                      pad=PAD)
    producer.wait_for(100)
    fulls: list[float] = []
    recoveries: list[float] = []
    end = time.monotonic() + duration
    while True:
        keep_running(min(duration / 4, 5.0), sup, producer=producer)
        message, full_for, recovery = fill_and_free(admin, sup, producer, filler, len(fulls))
        fulls.append(full_for)
        recoveries.append(recovery)
        if not soak or time.monotonic() >= end:
            break
    keep_running(max(0.0, min(duration / 2, end - time.monotonic())), sup, producer=producer)
    f = conclude("memory-full", "maxmemory reached (noeviction)", producer, ledger, began,
                 also_acked=filler.acked, faults=len(fulls),
                 full_s=percentile(fulls, 1.0), recovery_s=percentile(recoveries, 1.0),
                 producer_errors=dict(producer.errors), error_message=message[:300],
                 duration_s=duration)
    assert set(f.causes) <= {"WorkerLost"}, f.causes
    assert producer.errors.get("BrokerError"), "the producer never met the full server"
    assert_pool_intact([sup], kids, "while memory was full")
    admin.close()


def test_full_server_error_says_what_to_do(private_server, namespace):
    """Single and bulk enqueues on a full server fail with the advice, whichever way
    redis-py reports the refusal (it strips the ``OOM`` code into ``OutOfMemoryError``,
    and a pipeline wraps the message)."""
    srv = private_server()
    broker = Broker(srv.url, redis_settings=RedisSettings(namespace=namespace))
    broker.client.config_set("maxmemory", 1)
    with pytest.raises(BrokerError) as single:
        Queue(QUEUE, broker).enqueue(FUNCTION)
    with pytest.raises(BrokerError) as bulk:
        Queue(QUEUE, broker).enqueue_many([(FUNCTION,)])
    broker.client.config_set("maxmemory", 0)
    assert "free memory or raise maxmemory" in str(single.value)
    assert "free memory or raise maxmemory" in str(bulk.value)


@pytest.fixture(scope="module")
def oom_run(server, tmp_path_factory):
    """One worker runs 30 jobs of 20 ms and a single attempt each while the server is at
    maxmemory. Claim and complete still pass (their scripts' first write, ZPOPMIN or
    ZREM, cannot grow memory, and a script that has written may finish), but the
    worker's outcome counters (HINCRBY, flushed every 0.25 s) are refused. Shared by the
    two tests below; returns the ledger findings."""
    tmp = tmp_path_factory.mktemp("oom-flush")
    namespace = f"oomflush{os.getpid()}"
    srv = PrivateServer(tmp / "valkey")
    book = Ledger(server.url, f"{namespace}:ledger")
    sup = Supervisor(tmp / "sup", srv.url, namespace, workers=1, lease=1.0)
    try:
        srv.start()
        sup.start().wait_ready(1)
        producer = Producer(srv.url, namespace, book.url, book.key, tag="flush")
        ids = job_ids("flush", 0, 30)
        calls = [Call(FUNCTION, (book.url, book.key, 20.0), {},
                      EnqueueOptions(job_id=i, queue=QUEUE, max_attempts=1)) for i in ids]
        broker = producer.broker
        enqueue_many(calls, broker)
        wait_until(lambda: sup.busy(), timeout=10, what="the worker to start")
        broker.client.config_set("maxmemory", 1)
        wait_until(lambda: broker.client.zcard(broker.keys.queued(QUEUE)) == 0, timeout=30,
                   what="the worker to take every job")
        broker.client.config_set("maxmemory", 0)
        wait_settled(broker, timeout=30)
        # Counters are flushed when the worker goes idle.
        done = broker.client.zcard(broker.keys.completed(QUEUE))
        wait_until(lambda: counted_completions(broker) >= done, timeout=10, what="counters")
        yield audit(broker, book, ids, end_ok=lambda record: False)
    finally:
        sup.stop()
        srv.stop()
        book.clear()


def test_failed_counter_flush_keeps_the_claimed_job(oom_run):
    f = oom_run
    assert f.attempts_spent.get("WorkerLost", 0) == 0, f.attempts_spent
    assert f.states == {"completed": f.jobs}, f.states
    assert_ledger(f)


def test_failed_counter_flush_counts_each_completion_once(oom_run):
    f = oom_run
    assert f.counted_completed == f.states.get("completed", 0), (f.counted_completed, f.states)
