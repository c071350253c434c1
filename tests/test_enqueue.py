from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from jobs import (
    BrokerUnavailable,
    ConfigurationError,
    Job,
    JobDefaults,
    JobNotFound,
    JobState,
    PayloadTooLarge,
    Priority,
    Queue,
    RedisSettings,
    Worker,
)
from jobs.store.broker import Broker
from tests import jobfuncs
from tests.helpers import assert_consistent


def test_enqueue_by_function_uses_its_queue_and_priority(broker):
    j = jobfuncs.shout.enqueue("hi")
    assert j.refresh().queue == "other"
    assert j.priority == Priority.HIGH
    assert j.function == "tests.jobfuncs:shout"
    assert j.state is JobState.QUEUED
    assert j.attempts == 0
    assert j.enqueued_at is not None


def test_calling_the_function_directly_just_runs_it(broker):
    assert jobfuncs.add(1, 2) == 3
    assert Queue("default").counts()["queued"] == 0


def test_options_override(broker):
    j = jobfuncs.add.options(priority=500, queue="q2", timeout=5, max_attempts=7).enqueue(1, 2)
    r = j.refresh().record
    assert (r.queue, r.priority) == ("q2", 500)
    assert r.spec is not None and (r.spec.timeout, r.spec.max_attempts) == (5, 7)


def test_enqueue_by_name_without_import(broker):
    j = Queue("cpu").enqueue("some.module:fn", 1, x=2)
    r = j.refresh().record
    assert r.queue == "cpu" and r.spec is not None
    assert (r.spec.function, r.spec.args, r.spec.kwargs) == ("some.module:fn", [1], {"x": 2})
    assert_consistent(broker, j.id, "cpu")


def test_custom_id_is_idempotent(broker):
    a = jobfuncs.add.options(job_id="order-42").enqueue(1, 2)
    b = jobfuncs.add.options(job_id="order-42").enqueue(100, 200)
    assert a.id == b.id == "order-42"
    assert Queue("default").counts()["queued"] == 1
    r = Job.fetch("order-42").record
    assert r.spec is not None and r.spec.args == [1, 2]


def test_custom_id_of_a_finished_job_returns_it_unchanged(broker):
    jobfuncs.add.options(job_id="once").enqueue(1, 2)
    Worker(broker=broker).run_until_empty()
    again = jobfuncs.add.options(job_id="once").enqueue(1, 2)
    assert again.refresh().state is JobState.COMPLETED
    assert Queue("default").counts()["queued"] == 0


def test_delay_and_at_schedule(broker):
    a = jobfuncs.add.options(delay=30).enqueue(1, 1)
    b = jobfuncs.add.options(delay=timedelta(minutes=1)).enqueue(1, 1)
    c = jobfuncs.add.options(at=datetime.now(UTC) + timedelta(hours=1)).enqueue(1, 1)
    for j in (a, b, c):
        assert j.refresh().state is JobState.SCHEDULED
        assert_consistent(broker, j.id, "default")
    assert a.record.due_at - a.record.enqueued_at == pytest.approx(30, abs=0.01)
    assert c.record.due_at == pytest.approx((datetime.now(UTC) + timedelta(hours=1)).timestamp(),
                                            abs=5)


def test_at_in_the_past_queues_now(broker):
    j = jobfuncs.add.options(at=datetime.now(UTC) - timedelta(hours=1)).enqueue(1, 1)
    assert j.refresh().state is JobState.QUEUED


def test_enqueue_many_groups_by_queue_and_keeps_order(broker):
    calls = [jobfuncs.add.call(i, i) for i in range(2500)]
    calls += [jobfuncs.shout.call(str(i)) for i in range(700)]
    jobs_ = Queue.enqueue_many(Queue("default"), calls[:2500])
    from jobs import enqueue_many

    others = enqueue_many(calls[2500:])
    assert len(jobs_) == 2500 and len(others) == 700
    assert Queue("default").counts()["queued"] == 2500
    assert Queue("other").counts()["queued"] == 700
    w = Worker(["default"], broker=broker)
    first = [w.claim() for _ in range(3)]
    assert [c.spec.args for c in first] == [[0, 0], [1, 1], [2, 2]]


def test_enqueue_many_by_name_tuples(broker):
    jobs_ = Queue("bulk").enqueue_many([("m:f", i) for i in range(10)])
    assert Queue("bulk").counts()["queued"] == 10
    assert jobs_[3].refresh().record.spec.args == [3]


def test_unencodable_argument_names_it(broker):
    with pytest.raises(TypeError, match=r"argument 1 of tests.jobfuncs:add cannot be stored"):
        jobfuncs.add.enqueue(1, object())
    with pytest.raises(TypeError, match=r"keyword argument 'b'"):
        jobfuncs.add.enqueue(1, b=object())
    assert Queue("default").counts()["queued"] == 0


def test_struct_arguments_encode(broker):
    j = jobfuncs.norm.enqueue(jobfuncs.Point(3, 4))
    Worker(broker=broker).run_until_empty()
    assert j.result(timeout=1) == 25


def test_oversized_payload_refused(server, namespace):
    b = Broker(server.url, redis_settings=RedisSettings(namespace=namespace),
               defaults=JobDefaults(max_payload_bytes=1000))
    with pytest.raises(PayloadTooLarge, match="above max_payload_bytes \\(1000\\)"):
        Queue("default", b).enqueue(jobfuncs.add, "x" * 2000, 1)
    assert Queue("default", b).counts()["queued"] == 0


def test_bulk_with_one_bad_item_writes_nothing(broker):
    calls = [jobfuncs.add.call(1, 2), jobfuncs.add.call(1, object())]
    with pytest.raises(TypeError):
        Queue("default").enqueue_many(calls)
    assert Queue("default").counts()["queued"] == 0


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"priority": 1001}, "out of range"),
        ({"priority": "urgent"}, "neither a level"),
        ({"queue": "bad queue"}, "queue 'bad queue' is not valid"),
        ({"job_id": "a/b"}, "job_id 'a/b' is not valid"),
        ({"delay": -1}, "delay must be"),
        ({"at": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"delay": 1, "at": datetime.now(UTC)}, "either delay= or at="),
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout": 0}, "timeout must be"),
    ],
)
def test_bad_options_are_refused_clearly(broker, opts, message):
    with pytest.raises(ConfigurationError, match=message):
        jobfuncs.add.options(**opts).enqueue(1, 2)
    assert Queue("default").counts()["queued"] == 0


def test_bad_function_name(broker):
    with pytest.raises(ConfigurationError, match="module:function"):
        Queue("default").enqueue("not a name")


def test_lookup_of_unknown_id(broker):
    with pytest.raises(JobNotFound, match="never\\s+enqueued|was never"):
        Job.fetch("nope")


def test_unreachable_redis_names_the_url_without_password(tmp_path):
    url = f"unix://{tmp_path}/valkey.sock"
    b = Broker(url)
    with pytest.raises(BrokerUnavailable, match="jobvisor run") as info:
        Queue("default", b).enqueue("m:f")
    assert str(tmp_path) in str(info.value)
    secret = Broker("redis://alice:s3cr3tpw@127.0.0.1:1/0",
                    redis_settings=RedisSettings(connect_timeout=0.5))
    with pytest.raises(BrokerUnavailable) as info:
        secret.ping()
    assert "s3cr3tpw" not in str(info.value) and "alice:***@127.0.0.1:1" in str(info.value)
    assert isinstance(info.value, ConnectionError)


def test_bad_url_scheme():
    with pytest.raises(ConfigurationError, match="must start with redis://"):
        Broker("http://localhost")


def test_record_struct_roundtrip():
    from jobs import Backoff
    from jobs.records import JobSpec, encode_spec, encoder, spec_decoder

    spec = JobSpec(function="a:b", args=[1], kwargs={"k": [1, 2]}, timeout=2.0)
    assert spec_decoder.decode(encode_spec(spec)) == spec
    assert len(encode_spec(JobSpec(function="a:b"))) <= 11
    # Later options are stored only when set: a spec without them is the 7 fields every
    # version reads; one with them round-trips.
    assert len(msgspec.msgpack.decode(encode_spec(spec))) == 7
    retrying = JobSpec(function="a:b", backoff=Backoff(kind="fixed", base=2.0),
                       dont_retry_on=["KeyError"])
    assert spec_decoder.decode(encode_spec(retrying)) == retrying
    with pytest.raises(msgspec.ValidationError):
        spec_decoder.decode(encoder.encode([1, 2]))


def test_server_restart_reconnects_and_reloads_scripts(tmp_path):
    from tests.server import ValkeyServer

    srv = ValkeyServer(tmp_path / "own")
    srv.start()
    try:
        b = Broker(srv.url, redis_settings=RedisSettings(namespace="restart"))
        q = Queue("default", b)
        first = q.enqueue(jobfuncs.add, 1, 2)
        srv.restart()  # AOF keeps the data; the script cache is empty now
        second = q.enqueue(jobfuncs.add, 3, 4)
        assert first.refresh().state is JobState.QUEUED
        assert Worker(broker=b).run_until_empty() == {"completed": 2}
        assert second.result(timeout=1) == 7
        srv.stop()
        with pytest.raises(BrokerUnavailable, match="cannot reach Redis"):
            q.enqueue(jobfuncs.add, 5, 6)
        srv.start()
        assert q.counts()["queued"] == 0  # nothing half-written by the failed enqueue
    finally:
        srv.stop()


def test_a_plain_job_is_stored_alike_by_the_lean_and_the_general_script(broker):
    """One plain enqueue goes through enqueue_one.lua, a bulk one through enqueue.lua:
    the record, the queue, the counters, the event and the wake token must not differ."""
    c, k = broker.client, broker.keys
    c.script_flush()  # each script is loaded when first used: which one ran shows below
    lean = Queue("one", broker).options(priority=5).enqueue(jobfuncs.add, 1, 2)
    assert c.script_exists(broker.scripts.enqueue_one.sha, broker.scripts.enqueue.sha) \
        == [True, False]
    general = Queue("many", broker).enqueue_many([Queue("many", broker).options(
        priority=5).call(jobfuncs.add, 1, 2)])[0]
    assert c.script_exists(broker.scripts.enqueue.sha) == [True]

    def stored(job: Job, queue: str) -> dict:
        record = {f.decode(): v for f, v in c.hgetall(k.job(job.id)).items() if f != b"te"}
        record["q"] = record["q"].replace(queue.encode(), b"Q")
        score = c.zscore(k.queued(queue), job.id)
        return {"record": record, "band": int(score) >> 42, "wake": c.llen(k.wake(queue)),
                "counted": c.hget(k.enqueued(), f"{queue}|tests.jobfuncs:add")}

    assert stored(lean, "one") == stored(general, "many")
    assert {b"one", b"many"} <= set(c.smembers(k.queues()))
    events = {e[b"id"]: e[b"e"] for _, e in c.xrange(k.events()) if b"id" in e}
    assert events[lean.id.encode()] == b"enqueued"
    assert Worker(["one", "many"], broker=broker).run_until_empty() == {"completed": 2}
    assert lean.result() == general.result() == 3


def test_plain_jobs_go_through_the_general_script_while_limits_exist(broker):
    """The lean script refuses when the namespace has limits (writing nothing), and the
    job goes through the script that applies them: here a queue's concurrency limit."""
    from jobs.limits import set_limit

    set_limit(queue="capped", max_concurrency=1, broker=broker)
    first = Queue("capped", broker).enqueue(jobfuncs.add, 1, 1)
    second = Queue("capped", broker).enqueue(jobfuncs.add, 2, 2)
    lim = [broker.client.hget(broker.keys.job(j.id), "lim") for j in (first, second)]
    assert lim == [b"q:capped", b"q:capped"]
    assert Worker(["capped"], broker=broker).run_until_empty() == {"completed": 2}
