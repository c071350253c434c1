"""Random sequences of operations never leave a job in zero or two state indexes."""

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs import Broker, Queue, RedisSettings, Worker, reclaim
from jobs.records import AttemptError, ErrorKind
from tests.helpers import assert_consistent

OPS = ["enqueue", "enqueue_delayed", "claim", "claim_expiring", "complete", "retry", "die",
       "release", "reclaim", "promote_all", "cancel", "requeue", "purge", "renew"]
_ns = itertools.count()


def _error(attempt):
    return AttemptError(attempt=attempt, kind=ErrorKind.EXCEPTION, type="E", message="m")


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 5)), min_size=1, max_size=40))
def test_random_operations_keep_one_state_per_job(server, ops):
    broker = Broker(server.url, redis_settings=RedisSettings(namespace=f"prop{next(_ns)}"))
    q = Queue("p", broker)
    w = Worker(["p"], broker=broker, lease=60)
    known: list[str] = []
    claimed: dict[str, object] = {}
    try:
        for op, n in ops:
            target = known[n % len(known)] if known else None
            if op == "enqueue":
                known.append(q.options(priority=n * 100).enqueue("m:f", n).id)
            elif op == "enqueue_delayed":
                known.append(q.options(delay=3600).enqueue("m:f", n).id)
            elif op in ("claim", "claim_expiring"):
                w.lease = 0.0 if op == "claim_expiring" else 60
                c = w.claim()
                if c is not None:
                    claimed[c.id] = c
            elif op == "complete" and claimed:
                c = list(claimed.values())[n % len(claimed)]
                broker.complete(c, b"\xc0", 60)
            elif op in ("retry", "die") and claimed:
                c = list(claimed.values())[n % len(claimed)]
                broker.fail(c.id, c.queue, c.token, [_error(c.attempt)],
                            0.0 if op == "retry" else None)
            elif op == "release" and claimed:
                broker.release(list(claimed.values())[n % len(claimed)])
            elif op == "renew" and claimed:
                broker.renew([(c.id, c.queue, c.token) for c in claimed.values()], 60)
            elif op == "reclaim":
                reclaim(broker, ["p"])
            elif op == "promote_all":
                sched = broker.keys.scheduled("p")
                for job_id in broker.client.zrange(sched, 0, -1):
                    broker.client.zadd(sched, {job_id: 0})
                broker.maintenance.promote(["p"])
            elif op == "cancel" and target:
                broker.jobs.cancel(target, "p", "test")
            elif op == "requeue" and target:
                broker.jobs.requeue(target, "p")
            elif op == "purge" and target and broker.jobs.purge(target, "p") == 1:
                known.remove(target)
            for job_id in known:
                assert_consistent(broker, job_id, "p")
    finally:
        keys = list(broker.client.scan_iter(match=f"{broker.keys.ns}:*"))
        if keys:
            broker.client.delete(*keys)
        broker.client.close()
