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
    wait_until(lambda: broker.jobs.fetch("report") is None, timeout=5)
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
    from supervisor.runtime.duties import Duties, InFlight

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


def test_an_idle_workers_claim_travels_with_its_wait(broker, raw):
    """Woken by an enqueue, an idle worker gets its job without a round trip of its own:
    the claim was sent behind the blocking wait and runs the moment the wait returns."""
    import threading

    from jobs import Worker

    worker = Worker(["default"], broker=broker)
    writes = []
    got = []

    def idle_worker() -> None:
        assert worker.claim() is None  # connected, its scripts loaded
        conn = broker.runner._connection()  # this thread's connection
        send = conn.send_packed_command
        conn.send_packed_command = lambda *a, **k: (writes.append(1), send(*a, **k))[1]
        got.append(worker.claim(wait=10))

    waiting = threading.Thread(target=idle_worker)
    waiting.start()
    wait_until(lambda: any(c["cmd"] == "blpop" for c in raw.client_list()))
    job = jobfuncs.add.enqueue(2, 2)
    waiting.join(10)
    assert got and got[0] is not None and got[0].id == job.id
    assert job.refresh().state is JobState.ACTIVE and job.record.token == got[0].token
    assert len(writes) == 2  # the claim that found nothing, then the wait with the claim


def test_a_worker_asked_to_stop_does_not_start_a_wait(broker):
    """A stop request that lands between claims (not during the wait, which it would
    interrupt) keeps the worker from starting a blocking wait: it leaves at once."""
    import time

    from jobs import Worker

    worker = Worker(["default"], broker=broker)
    worker.stopping = True
    started = time.monotonic()
    assert worker.claim(wait=30) is None
    assert time.monotonic() - started < 10  # not the 30 s wait


class ReplyDroppingProxy:
    """TCP in front of the server's unix socket; while ``dropping``, requests still reach
    the server but its replies are thrown away (a reply lost on the way back)."""

    def __init__(self, socket_path: str) -> None:
        import socket
        import threading

        self.socket_path = socket_path
        self.dropping = False
        self.drop_next = 0  # replies (reads from the server) to throw away, then pass
        self.garble_next = 0  # replies to answer with something that is not Redis instead
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.socket_path)
            for src, dst, replies in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pipe, args=(src, dst, replies), daemon=True).start()

    def _pipe(self, src, dst, replies: bool) -> None:
        try:
            while data := src.recv(65536):
                if replies and self.drop_next > 0:
                    self.drop_next -= 1
                elif replies and self.garble_next > 0:
                    self.garble_next -= 1
                    dst.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                elif not (replies and self.dropping):
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def close(self) -> None:
        self.listener.close()


def test_a_claim_whose_reply_never_came_is_asked_again_with_its_token(server, namespace):
    """Every reply to a claim is lost, past the runner's own resends: the claim ran on the
    server all the same. The worker's next claim asks with the same token, so the job it
    took is run rather than stranded until its lease expires."""
    from jobs import Broker, BrokerUnavailable, RedisSettings, Worker

    proxy = ReplyDroppingProxy(str(server.socket))
    try:
        broker = Broker(f"redis://127.0.0.1:{proxy.port}/0", redis_settings=RedisSettings(
            namespace=namespace, connect_timeout=1.0, socket_timeout=0.3))
        queue = Queue("default", broker)
        job = queue.enqueue(jobfuncs.add, 1, 2)
        worker = Worker(["default"], broker=broker)
        broker.client.script_load(broker.scripts.claim.script)  # no NOSCRIPT reply to lose
        proxy.dropping = True
        with pytest.raises(BrokerUnavailable):
            worker.claim()
        proxy.dropping = False
        assert job.refresh().state is JobState.ACTIVE  # taken, and nobody was told
        claimed = worker.claim()
        assert claimed is not None and claimed.id == job.id
        assert job.refresh().record.token == claimed.token
        assert queue.counts()["active"] == 1
    finally:
        proxy.close()


def test_an_enqueue_whose_reply_was_lost_is_written_once(server, namespace):
    """The runner resends an enqueue whose reply never came, flagged as a resend: the
    script finds the job its first send wrote and writes nothing twice (one job, one
    event)."""
    from jobs import Broker, RedisSettings

    proxy = ReplyDroppingProxy(str(server.socket))
    try:
        broker = Broker(f"redis://127.0.0.1:{proxy.port}/0", redis_settings=RedisSettings(
            namespace=namespace, connect_timeout=1.0, socket_timeout=0.3))
        queue = Queue("default", broker)
        for script in (broker.scripts.enqueue, broker.scripts.enqueue_one):
            broker.client.script_load(script.script)  # no NOSCRIPT reply to lose
        broker.runner.command("PING")  # the runner's connection is open: the enqueue's reply
        proxy.drop_next = 1  # is the next one from the server
        job = queue.enqueue(jobfuncs.add, 1, 2)
        assert proxy.drop_next == 0  # the first reply was lost, the resend answered
        assert queue.counts()["queued"] == 1 and job.refresh().state is JobState.QUEUED
        events = broker.client.xrange(broker.keys.events())
        assert [e[b"e"] for _, e in events if e.get(b"id") == job.id.encode()] == [b"enqueued"]
    finally:
        proxy.close()


def test_a_reply_that_is_not_redis_drops_the_connection_and_the_call_is_resent(
        server, namespace):
    """Something that is not the server answered on the connection (a proxy on the route,
    a stream out of step): the runner never reads from that connection again; the call
    is resent, flagged, on a new one, and the job is written once."""
    from jobs import Broker, RedisSettings

    proxy = ReplyDroppingProxy(str(server.socket))
    try:
        broker = Broker(f"redis://127.0.0.1:{proxy.port}/0", redis_settings=RedisSettings(
            namespace=namespace, connect_timeout=1.0, socket_timeout=1.0))
        queue = Queue("default", broker)
        for script in (broker.scripts.enqueue, broker.scripts.enqueue_one):
            broker.client.script_load(script.script)
        broker.runner.command("PING")
        proxy.garble_next = 1
        job = queue.enqueue(jobfuncs.add, 1, 2)
        assert proxy.garble_next == 0
        assert queue.counts()["queued"] == 1 and job.refresh().state is JobState.QUEUED
        assert broker.runner.command("PING") == b"PONG"
    finally:
        proxy.close()


def test_a_refused_wait_keeps_the_connection_in_step(broker, raw):
    """The blocking wait is refused (here: its wake list is not a list) while the claim
    sent behind it runs: both replies are read, the refusal is reported, and the next
    command on that connection gets its own reply."""
    from jobs import BrokerError, Worker
    from jobs.cluster import pause, resume

    pause("default", broker)  # the claim finds nothing and leaves the wake key alone
    job = jobfuncs.add.enqueue(1, 1)
    raw.set(broker.keys.wake("default"), "not a list")
    worker = Worker(["default"], broker=broker)
    with pytest.raises(BrokerError, match="WRONGTYPE"):
        worker.claim(wait=1)
    raw.delete(broker.keys.wake("default"))
    resume("default", broker)
    claimed = worker.claim()
    assert claimed is not None and claimed.id == job.id
