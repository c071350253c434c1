"""``batch([...])``: jobs that run independently, with callbacks when the last one ends.

The member whose final outcome completes the batch enqueues the callbacks inside the
same Lua step that records that outcome (``batch_member_final``, in ``_after_final.lua``),
so they are enqueued exactly once even when members finish at the same instant on many
hosts.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import msgspec
import redis

import jobs.tracing as tracing
from jobs.chain import as_call
from jobs.decorator import JobFunction
from jobs.enqueue import by_queue, check_limits, prepare_call, sealer_for
from jobs.errors import BrokerUnavailable, ConfigurationError, JobNotFound, ResultTimeout
from jobs.job import Job
from jobs.options import Call, EnqueueOptions, Prepared, new_job_id, prepare
from jobs.priority import Priority
from jobs.registry import find
from jobs.store.broker import Broker, default_broker
from jobs.store.connection import translated
from jobs.store.keys import check_name
from jobs.store.urls import redact

CALLBACKS = ("success", "failure", "complete")
WRITE_TRIES = 3  # a batch's transaction, when a lost connection cut it off

Hook = JobFunction[Any, Any] | Call | str


class BatchProgress(msgspec.Struct, frozen=True, kw_only=True):
    """Members by outcome; ``failed`` counts dead members, ``canceled`` canceled ones."""

    total: int
    completed: int
    failed: int
    canceled: int
    pending: int
    finished: bool  # every member is final and the callbacks were enqueued


PROGRESS_FIELDS = ("total", "completed", "dead", "canceled", "fired")


def progress_of(raw: list[bytes | None]) -> BatchProgress | None:
    """The progress in a batch record's ``PROGRESS_FIELDS``; None when there is no record."""
    if raw[0] is None:
        return None
    total, completed, dead, canceled = (int(x or 0) for x in raw[:4])
    return BatchProgress(total=total, completed=completed, failed=dead, canceled=canceled,
                         pending=total - completed - dead - canceled, finished=raw[4] is not None)


class BatchHandle:
    """A batch by id: its progress, its jobs, and a blocking wait for its end."""

    def __init__(self, batch_id: str, broker: Broker | None = None) -> None:
        self.id = batch_id
        self.broker = broker or default_broker()

    def __repr__(self) -> str:
        return f"<Batch {self.id}>"

    def progress(self) -> BatchProgress:
        b = self.broker
        with translated(b.url):
            raw = b.client.hmget(b.keys.batch(self.id), *PROGRESS_FIELDS)
        found = progress_of(raw)
        if found is None:
            raise JobNotFound(f"no batch {self.id!r}: never created, or expired after it ended")
        return found

    def jobs(self) -> list[Job]:
        b = self.broker
        with translated(b.url):
            ids = b.client.lrange(b.keys.batch_jobs(self.id), 0, -1)
        return [Job(i.decode(), b) for i in ids]

    def callback(self, kind: str) -> Job:
        """The callback job ``success``, ``failure`` or ``complete`` (once it was enqueued)."""
        if kind not in CALLBACKS:
            raise ConfigurationError(f"callback kind must be one of {CALLBACKS}, got {kind!r}")
        return Job(f"{self.id}.on_{kind}", self.broker)

    def wait(self, timeout: float | None = None) -> BatchProgress:
        """Block on Redis until every member is final; ``ResultTimeout`` after ``timeout``."""
        b = self.broker
        key = b.keys.batch(self.id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with translated(b.url):
                pipe = b.client.pipeline(transaction=True)
                pipe.hincrby(key, "w", 1)
                pipe.hget(key, "fired")
                _, fired = pipe.execute()
            if fired is not None:
                return self.progress()
            remaining = 30.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise ResultTimeout(f"batch {self.id} has not finished after {timeout} s")
            b.jobs.wait_done(f"batch:{self.id}", remaining)


class Batch:
    """Jobs that run in parallel, with optional callbacks enqueued when the last one ends.

    ``on_success`` runs when every member completed, ``on_failure`` when any ended dead or
    canceled, ``on_complete`` in both cases. Each is a ``@job`` function, a call
    (``fn.call(*args)``) or a name, and receives the batch id after its own arguments.
    """

    def __init__(self, calls: list[Call | JobFunction[Any, Any]], *, name: str = "",
                 on_success: Hook | None = None,
                 on_failure: Hook | None = None,
                 on_complete: Hook | None = None) -> None:
        self.calls = [as_call(c, "batch()") for c in calls]
        if not self.calls:
            raise ConfigurationError("a batch needs at least one job")
        for c in self.calls:
            if c.options.job_id is not None or c.options.unique_for is not None:
                raise ConfigurationError(
                    f"batch member {c.function} sets job_id or unique_for: every member of a "
                    "batch must be a new job, so that its outcome is counted in the batch"
                )
        if not isinstance(name, str) or len(name) > 200:
            raise ConfigurationError(f"batch name must be a string of at most 200 characters, "
                                     f"got {name!r}")
        self.name = name
        self.hooks = {"success": on_success, "failure": on_failure, "complete": on_complete}

    def enqueue(self, broker: Broker | None = None, batch_id: str | None = None) -> BatchHandle:
        """Record the batch and enqueue its members in one transaction; returns its handle.

        With ``batch_id`` the enqueue is idempotent: a batch with that id is left alone.
        """
        broker = broker or default_broker()
        bid = check_name("batch id", batch_id) if batch_id else new_job_id()
        if len(bid) > 100:
            raise ConfigurationError("batch id must be at most 100 characters")
        fields: dict[str, Any] = {
            "total": len(self.calls), "name": self.name, "te": int(time.time() * 1000),
            "ttl": int(broker.defaults.dead_ttl * 1000),
        }
        for kind, hook in self.hooks.items():
            if hook is not None:
                spec = self._callback(kind, hook, bid, broker)
                fields |= {f"{kind}:spec": spec.spec, f"{kind}:q": spec.queue,
                           f"{kind}:pri": spec.priority}
        members = [prepare_call(c, broker) for c in self.calls]
        members = [msgspec.structs.replace(p, extra={**p.extra, "b": bid}) for p in members]
        check_limits(members, broker)
        tracing.enqueue(members, lambda traced: _write(traced, bid, fields, broker))
        return BatchHandle(bid, broker)

    @staticmethod
    def _callback(kind: str, hook: Hook, bid: str, broker: Broker) -> Prepared:
        """The callback job's spec: its own arguments, then the batch id."""
        if isinstance(hook, JobFunction):
            hook = hook.call()
        elif isinstance(hook, str):
            hook = Call(hook, (), {}, EnqueueOptions(priority=int(Priority.NORMAL)))
        if not isinstance(hook, Call):
            raise ConfigurationError(
                f"on_{kind} takes a @job function, a call such as fn.call(*args) or a "
                f"'module:function' name, got {hook!r}")
        call = Call(hook.function, (*hook.args, bid), hook.kwargs, hook.options)
        return prepare(call, default_queue=broker.defaults.queue,
                       default_priority=int(Priority.NORMAL),
                       max_bytes=broker.defaults.max_payload_bytes,
                       sealer=sealer_for(call, find(call.function), broker))


def _write(members: list[Prepared], bid: str, fields: dict[str, Any], broker: Broker) -> None:
    """The batch and all its members in one MULTI transaction, or nothing. WATCH makes two
    enqueues of one batch_id at the same moment write it once; a batch with that id
    already there is left alone (a resend changes nothing)."""
    for _ in range(WRITE_TRIES):
        _write_once(members, bid, fields, broker)
        # redis-py reports a connection lost at EXEC as a WatchError too: only a batch
        # that is there now was written (by this call or a concurrent one).
        with translated(broker.url):
            if broker.client.exists(broker.keys.batch(bid)):
                return
    raise BrokerUnavailable(
        f"batch {bid} could not be written to Redis at {redact(broker.url)} after "
        f"{WRITE_TRIES} tries (its transaction was cut off each time); nothing of it was "
        "written: enqueue it again")


def _write_once(members: list[Prepared], bid: str, fields: dict[str, Any],
                broker: Broker) -> None:
    key = broker.keys.batch(bid)
    with translated(broker.url), broker.client.pipeline(transaction=True) as pipe:
        pipe.watch(key)
        if pipe.exists(key):
            return
        pipe.multi()
        pipe.hset(key, mapping=fields)
        pipe.rpush(broker.keys.batch_jobs(bid), *(p.id for p in members))
        # Listed from now on. An expired earlier batch of this id may still wait in the
        # ending set: taken out, its trim cannot unlist this one.
        pipe.zadd(broker.keys.batches(), {bid: time.time_ns() // 1000})
        pipe.zrem(broker.keys.batches_ending(), bid)
        broker.enqueue_into(pipe, by_queue(members))
        # A WatchError: the same batch_id was enqueued concurrently, and that one stands.
        with contextlib.suppress(redis.WatchError):
            pipe.execute()


def batch(calls: list[Call | JobFunction[Any, Any]], *, name: str = "",
          on_success: Hook | None = None,
          on_failure: Hook | None = None,
          on_complete: Hook | None = None) -> Batch:
    return Batch(calls, name=name, on_success=on_success, on_failure=on_failure,
                 on_complete=on_complete)
