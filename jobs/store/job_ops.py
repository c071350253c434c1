"""Reads and commands on single jobs and queues (show, cancel, requeue, progress, ...)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from jobs.records import Claimed, JobRecord, record_from_hash
from jobs.store.broker_state import BrokerState
from jobs.store.connection import translated
from jobs.store.layouts import CANCEL, EVENT, PROGRESS, PURGE, REQUEUE, RESUME, WATCH


class JobOperations(BrokerState):
    """A mixin of ``Broker``."""

    def fetch(self, job_id: str) -> JobRecord | None:
        with translated(self.url):
            fields = self.client.hgetall(self.keys.job(job_id))
        return record_from_hash(job_id, fields) if fields else None

    def held(self, queue: str) -> int:
        """Queued jobs of ``queue`` that a rate or concurrency limit holds back."""
        with translated(self.url):
            return int(self.client.hget(self.keys.held(), queue) or 0)

    def exist(self, job_ids: Sequence[str]) -> list[bool]:
        """Whether each job's record exists (one round trip)."""
        with translated(self.url):
            pipe = self.client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.exists(self.keys.job(job_id))
            return [bool(n) for n in pipe.execute()]

    def fetch_many(self, job_ids: Sequence[str]) -> list[dict[bytes, bytes]]:
        with translated(self.url):
            pipe = self.client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hgetall(self.keys.job(job_id))
            return list(pipe.execute())

    def scan_index(self, index: str, newest_first: bool = True,
                   page: int = 500) -> Iterator[list[str]]:
        """Ids of a state index in pages (newest first by default)."""
        start = 0
        while True:
            with translated(self.url):
                if newest_first:
                    raw = self.client.zrevrange(index, start, start + page - 1)
                else:
                    raw = self.client.zrange(index, start, start + page - 1)
            if not raw:
                return
            yield [i.decode() for i in raw]
            start += page

    def counts(self, queue: str, states: Sequence[str]) -> dict[str, int]:
        with translated(self.url):
            pipe = self.client.pipeline(transaction=False)
            for state in states:
                pipe.zcard(self.keys.state_index(queue, state))
            return dict(zip(states, (int(n) for n in pipe.execute()), strict=True))

    def progress(self, job: Claimed, encoded: bytes, done: float, total: float | None,
                 message: str) -> bool:
        keys = PROGRESS.keys(job=self.keys.job(job.id), events=self.keys.events())
        args = PROGRESS.args(token=job.token, progress=encoded, events_len=self.events_len,
                             id=job.id, queue=job.queue, done=done,
                             total="" if total is None else total, message=message)
        with translated(self.url):
            return bool(self.scripts.progress(keys=keys, args=args))

    def event(self, **fields: str | int | float) -> None:
        """Append one event (used for worker lifecycle events)."""
        each: list[Any] = []
        for key, value in fields.items():
            each += EVENT.arg_item(field=key, value=value)
        with translated(self.url):
            self.scripts.event(keys=EVENT.keys(events=self.keys.events()),
                               args=EVENT.args(each, events_len=self.events_len))

    def append_log(self, job_id: str, line: str, keep: int) -> None:
        key = self.keys.log(job_id)
        with translated(self.url):
            pipe = self.client.pipeline(transaction=False)
            pipe.rpush(key, f"{time.time():.3f} {line}")
            pipe.ltrim(key, -keep, -1)
            pipe.expire(key, int(self.defaults.dead_ttl))
            pipe.execute()

    def job_log(self, job_id: str) -> list[str]:
        with translated(self.url):
            return [x.decode("utf-8", "replace") for x in
                    self.client.lrange(self.keys.log(job_id), 0, -1)]

    def state_of(self, job_id: str) -> str | None:
        with translated(self.url):
            st = self.client.hget(self.keys.job(job_id), "st")
        return st.decode() if st else None

    def queue_of(self, job_id: str) -> str | None:
        with translated(self.url):
            q = self.client.hget(self.keys.job(job_id), "q")
        return q.decode() if q else None

    def cancel(self, job_id: str, queue: str, reason: str) -> int | str | None:
        """1 when canceled, 'active' when a running job was asked to stop, else its state."""
        keys, args = self.cancel_call(job_id, queue, reason)
        with translated(self.url):
            return _state_reply(self.scripts.cancel(keys=keys, args=args))

    def cancel_call(self, job_id: str, queue: str,
                    reason: str) -> tuple[list[Any], list[Any]]:
        k = self.keys
        keys = CANCEL.keys(job=k.job(job_id), queued=k.queued(queue), scheduled=k.scheduled(queue),
                           waiting=k.state_index(queue, "waiting"), canceled=k.canceled(queue),
                           done=k.done(job_id), wake_list=k.wake(queue), events=k.events(),
                           cancels=k.cancels(), held=k.held())
        args = CANCEL.args(id=job_id, reason=reason, prefix=self.prefix,
                           canceled_ttl_ms=int(self.defaults.dead_ttl * 1000),
                           max_canceled=self.defaults.max_dead, events_len=self.events_len,
                           queue=queue)
        return keys, args

    def requeue(self, job_id: str, queue: str,
                states: Sequence[str] = ("dead",)) -> int | str | None:
        """Queue a dead (or, when ``states`` allows, canceled) job again with fresh attempts.

        1 when requeued, -1 when the job is on another queue, else its state or None.
        """
        keys, args = self.requeue_call(job_id, queue, states)
        with translated(self.url):
            return _state_reply(self.scripts.requeue(keys=keys, args=args))

    def requeue_call(self, job_id: str, queue: str,
                     states: Sequence[str]) -> tuple[list[Any], list[Any]]:
        k = self.keys
        return (REQUEUE.keys(job=k.job(job_id), dead=k.dead(queue), canceled=k.canceled(queue),
                             queued=k.queued(queue), wake_list=k.wake(queue), sequence=k.seq(),
                             events=k.events()),
                REQUEUE.args(id=job_id, queue=queue, events_len=self.events_len,
                             prefix=self.prefix, states=",".join(states)))

    def cancel_requests(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Which of these running jobs someone asked to cancel, with the reason given."""
        if not job_ids:
            return {}
        with translated(self.url):
            flags = self.client.smismember(self.keys.cancels(), list(job_ids))
            asked = [j for j, flag in zip(job_ids, flags, strict=True) if flag]
            if not asked:
                return {}
            pipe = self.client.pipeline(transaction=False)
            for job_id in asked:
                pipe.hget(self.keys.job(job_id), "cx")
            reasons = pipe.execute()
        return {j: (r or b"canceled by request").decode("utf-8", "replace")
                for j, r in zip(asked, reasons, strict=True)}

    def purge(self, job_id: str, queue: str,
              states: Sequence[str] = ("dead",)) -> int | str | None:
        """Delete a job in one of ``states`` (final ones only) with its log for good.

        1 when deleted, -1 when the job is on another queue, else its state or None.
        """
        keys, args = self.purge_call(job_id, queue, states)
        with translated(self.url):
            return _state_reply(self.scripts.purge(keys=keys, args=args))

    def purge_call(self, job_id: str, queue: str,
                   states: Sequence[str]) -> tuple[list[Any], list[Any]]:
        k = self.keys
        return (PURGE.keys(job=k.job(job_id), completed=k.completed(queue), dead=k.dead(queue),
                           canceled=k.canceled(queue), log=k.log(job_id), done=k.done(job_id),
                           kids=k.kids(job_id)),
                PURGE.args(id=job_id, queue=queue, states=",".join(states)))

    def resume(self, queue: str) -> bool:
        keys = RESUME.keys(paused=self.keys.paused(), queued=self.keys.queued(queue),
                           wake_list=self.keys.wake(queue))
        with translated(self.url):
            return bool(self.scripts.resume(keys=keys, args=RESUME.args(queue=queue)))

    def watch(self, job_id: str) -> str | None:
        """Count one more result waiter unless the job is final; its state, or None."""
        with translated(self.url):
            st = self.scripts.watch(keys=WATCH.keys(job=self.keys.job(job_id)),
                                    args=WATCH.args())
        return st.decode() if st else None

    def wait_done(self, job_id: str, timeout: float) -> None:
        wait = max(0.01, min(timeout, self.settings.socket_timeout * 0.6))
        with translated(self.url):
            self.client.blpop([self.keys.done(job_id)], timeout=wait)


def _state_reply(reply: Any) -> int | str | None:
    if reply is None:
        return None
    if isinstance(reply, bytes):
        return reply.decode()
    return int(reply)
