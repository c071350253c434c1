"""Edge cases found in review: reused ids, absurd values, hooks, wrong queues, orphans."""

import pytest

from jobs import (
    Broker,
    BrokerError,
    ConfigurationError,
    Job,
    JobState,
    Queue,
    RedisSettings,
    Worker,
    reclaim,
)
from tests import jobfuncs
from tests.helpers import assert_consistent, wait_until


def test_reused_custom_id_after_expiry_is_not_deleted_by_trimming(broker):
    jobfuncs.add.options(job_id="report", result_ttl=0.05).enqueue(1, 1)
    Worker(broker=broker).run_until_empty()
    wait_until(lambda: broker.fetch("report") is None, timeout=5)
    again = jobfuncs.add.options(job_id="report").enqueue(2, 2)
    assert_consistent(broker, "report", "default")
    jobfuncs.add.enqueue(0, 0)
    w = Worker(broker=broker)
    first = w.claim()
    assert first.id == "report"
    w.finish(first, *w.execute(first))
    assert again.result(timeout=1) == 4
    assert_consistent(broker, "report", "default")


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"result_ttl": 1e20}, "result_ttl must be"),
        ({"delay": float("nan")}, "delay must be"),
        ({"delay": float("inf")}, "delay must be"),
        ({"delay": 1e20}, "delay must be"),
        ({"timeout": float("nan")}, "timeout must be"),
        ({"max_attempts": 10**9}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
    ],
)
def test_absurd_values_refused(broker, opts, message):
    with pytest.raises(ConfigurationError, match=message):
        jobfuncs.add.options(**opts).enqueue(1, 1)


def test_retry_after_infinity_is_capped_not_crashing(broker):
    j = jobfuncs.retry_forever.enqueue()
    assert Worker(broker=broker).run_until_empty() == {"scheduled": 1}
    r = j.refresh().record
    assert r.state is JobState.SCHEDULED and r.due_at - r.started_at > 86400 * 365


def test_on_dead_hook_with_longest_id(broker):
    long_id = "x" * 128
    jobfuncs.dies_with_hook.options(job_id=long_id).enqueue()
    assert Worker(broker=broker).run_until_empty() == {"dead": 1, "completed": 1}
    hooks = [k for k in broker.client.scan_iter(match=f"{broker.keys.ns}:job:*.on_dead")]
    assert len(hooks) == 1


def test_requeue_or_purge_on_the_wrong_queue_is_refused(broker):
    j = jobfuncs.gives_up.enqueue()
    Worker(broker=broker).run_until_empty()
    with pytest.raises(ConfigurationError, match="not on queue 'other' but on 'default'"):
        Queue("other").requeue_dead(j.id)
    with pytest.raises(ConfigurationError, match="not on queue 'other'"):
        Queue("other").purge_dead(j.id)
    assert_consistent(broker, j.id, "default")
    assert j.refresh().state is JobState.DEAD


def test_result_registers_one_waiter_per_call(broker):
    j = jobfuncs.add.enqueue(1, 1)
    for _ in range(5):
        with pytest.raises(Exception, match="still queued"):
            j.result(timeout=0.05)
    assert int(broker.client.hget(broker.keys.job(j.id), "w")) <= 5
    Worker(broker=broker).run_until_empty()
    assert broker.client.hget(broker.keys.job(j.id), "w") is None  # cleared at completion


def test_orphan_active_entry_is_dropped_by_reclaim(broker):
    broker.client.zadd(broker.keys.active("default"), {"ghost": 0})
    broker.client.sadd(broker.keys.queues(), "default")
    assert reclaim(broker) == []
    assert broker.client.zcard(broker.keys.active("default")) == 0


def test_claim_tops_up_other_queues_wake_tokens(broker):
    Queue("a").enqueue("m:f")
    Queue("b").enqueue("m:f")
    broker.client.delete(broker.keys.wake("b"))  # b's token went to a worker that claimed a
    assert Worker(["a", "b"], broker=broker).claim().queue == "a"
    assert broker.client.llen(broker.keys.wake("b")) == 1


def test_paused_queue_is_skipped_and_resumed(broker):
    from jobs.cluster import pause, paused, resume

    Queue("p1").enqueue("m:f")
    Queue("p2").enqueue("m:f")
    pause("p1")
    assert paused() == {"p1"}
    w = Worker(["p1", "p2"], broker=broker)
    assert w.claim().queue == "p2"
    assert w.claim() is None
    resume("p1")
    assert broker.client.llen(broker.keys.wake("p1")) == 1
    assert w.claim().queue == "p1"


def test_unencodable_cyclic_result_is_dead_not_crash(broker):
    j = jobfuncs.cyclic.enqueue()
    assert Worker(broker=broker).run_until_empty() == {"dead": 1}
    assert j.refresh().error.type == "UnencodableResult"


def test_server_out_of_memory_is_a_clear_error_and_writes_nothing(tmp_path):
    from tests.server import ValkeyServer

    srv = ValkeyServer(tmp_path / "oom")
    srv.start()
    try:
        b = Broker(srv.url, redis_settings=RedisSettings(namespace="oom"))
        q = Queue("default", b)
        q.enqueue(jobfuncs.add, 1, 1)
        b.client.config_set("maxmemory-policy", "noeviction")
        b.client.config_set("maxmemory", 1)
        with pytest.raises(BrokerError, match="maxmemory"):
            q.enqueue(jobfuncs.add, 2, 2)
        b.client.config_set("maxmemory", 0)
        assert q.counts()["queued"] == 1
        assert len(list(b.client.scan_iter(match="oom:job:*"))) == 1
        assert Job.fetch(q.enqueue(jobfuncs.add, 3, 3).id, b).state is JobState.QUEUED
    finally:
        srv.stop()


def test_a_claim_in_flight_of_a_dead_worker_is_given_back(broker):
    """A worker killed after sending a claim but before showing the job in its slot."""
    from supervisor.duties import Duties, InFlight

    job = jobfuncs.add.enqueue(1, 1)
    assert broker.claim(["default"], "host:1:ab#7", 60).id == job.id
    duties = Duties(broker, 60, ["default"], lambda: [], dict, lambda message: None)
    duties.settle(InFlight("host:1:ab#7"))
    duties.settle(InFlight("host:1:ab#8"))  # a claim that took nothing: nothing to do
    assert duties._flush() and duties.pending == 0
    assert job.refresh().state is JobState.QUEUED and job.attempts == 0
    assert_consistent(broker, job.id, "default")


def test_an_unresponsive_server_is_reported_after_one_round_of_retries():
    """Connects are retried by the client's policy once, not again by the script runner
    (a silent server used to take 4 x 4 connect timeouts to be reported)."""
    import socket
    import time

    from jobs import Broker, BrokerUnavailable, RedisSettings

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # connects complete; nothing ever answers the handshake
        port = listener.getsockname()[1]
        broker = Broker(f"rediss://127.0.0.1:{port}/0", redis_settings=RedisSettings(
            namespace="silent", connect_timeout=0.5, socket_timeout=0.5))
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="cannot reach Redis"):
            broker.enqueue("default", [])
        # 4 connect attempts of 0.5 s and short pauses; 16 attempts would take over 8 s.
        assert time.monotonic() - started < 5.0
