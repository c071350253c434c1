"""Reads and commands on single jobs and queues (show, cancel, requeue, progress, ...)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, Final

from jobs.records import Claimed, JobRecord, decode_meta, record_from_hash
from jobs.store.connection import translated
from jobs.store.layouts import CANCEL, EVENT, PROGRESS, PURGE, REQUEUE, RESUME, WATCH
from jobs.store.store import Store


class JobOperations:
    """``broker.jobs``: what the CLI, queues, job handles and the supervisor read and
    change outside the claim-run-finish path."""

    def __init__(self, store: Store) -> None:
        self.store: Final = store

    def fetch(self, job_id: str) -> JobRecord | None:
        s = self.store
        with translated(s.url):
            fields = s.client.hgetall(s.keys.job(job_id))
        return record_from_hash(job_id, fields) if fields else None

    def known_queues(self) -> list[str]:
        """Every queue that has had jobs, by name."""
        s = self.store
        with translated(s.url):
            return sorted(q.decode() for q in s.client.smembers(s.keys.queues()))

    def held(self, queue: str) -> int:
        """Queued jobs of ``queue`` that a rate or concurrency limit holds back."""
        s = self.store
        with translated(s.url):
            return int(s.client.hget(s.keys.held(), queue) or 0)

    def exist(self, job_ids: Sequence[str]) -> list[bool]:
        """Whether each job's record exists (one round trip)."""
        s = self.store
        with translated(s.url):
            pipe = s.client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.exists(s.keys.job(job_id))
            return [bool(n) for n in pipe.execute()]

    def fetch_many(self, job_ids: Sequence[str]) -> list[dict[bytes, bytes]]:
        s = self.store
        with translated(s.url):
            pipe = s.client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hgetall(s.keys.job(job_id))
            return list(pipe.execute())

    def scan_index(self, index: str, newest_first: bool = True,
                   page: int = 500) -> Iterator[list[str]]:
        """Ids of a state index in pages (newest first by default)."""
        s = self.store
        start = 0
        while True:
            with translated(s.url):
                if newest_first:
                    raw = s.client.zrevrange(index, start, start + page - 1)
                else:
                    raw = s.client.zrange(index, start, start + page - 1)
            if not raw:
                return
            yield [i.decode() for i in raw]
            start += page

    def counts(self, queue: str, states: Sequence[str]) -> dict[str, int]:
        s = self.store
        with translated(s.url):
            pipe = s.client.pipeline(transaction=False)
            for state in states:
                pipe.zcard(s.keys.state_index(queue, state))
            return dict(zip(states, (int(n) for n in pipe.execute()), strict=True))

    def progress(self, job: Claimed, encoded: bytes, done: float, total: float | None,
                 message: str) -> bool:
        s = self.store
        keys = PROGRESS.keys(job=s.keys.job(job.id), events=s.keys.events())
        args = PROGRESS.args(token=job.token, progress=encoded, events_len=s.events_len,
                             id=job.id, queue=job.queue, done=done,
                             total="" if total is None else total, message=message)
        with translated(s.url):
            return bool(s.scripts.progress(keys=keys, args=args))

    def event(self, **fields: str | int | float) -> None:
        """Append one event (used for worker lifecycle events)."""
        s = self.store
        each: list[Any] = []
        for key, value in fields.items():
            each += EVENT.arg_item(field=key, value=value)
        with translated(s.url):
            s.scripts.event(keys=EVENT.keys(events=s.keys.events()),
                            args=EVENT.args(each, events_len=s.events_len))

    def append_log(self, job_id: str, line: str, keep: int) -> None:
        s = self.store
        key = s.keys.log(job_id)
        with translated(s.url):
            pipe = s.client.pipeline(transaction=False)
            pipe.rpush(key, f"{time.time():.3f} {line}")
            pipe.ltrim(key, -keep, -1)
            pipe.expire(key, int(s.defaults.dead_ttl))
            pipe.execute()

    def job_log(self, job_id: str) -> list[str]:
        s = self.store
        with translated(s.url):
            return [x.decode("utf-8", "replace") for x in
                    s.client.lrange(s.keys.log(job_id), 0, -1)]

    def meta(self, job_id: str) -> dict[str, Any] | None:
        """What the job was enqueued with as ``options(meta=...)``, if anything."""
        s = self.store
        with translated(s.url):
            return decode_meta(s.client.hget(s.keys.job(job_id), "meta"))

    def passing_parent(self, job_id: str) -> str | None:
        """The parent whose result this job is passed (``pass_result=True``), if any."""
        s = self.store
        with translated(s.url):
            raw = s.client.hget(s.keys.job(job_id), "pr")
        return raw.decode() if raw else None

    def state_of(self, job_id: str) -> str | None:
        s = self.store
        with translated(s.url):
            st = s.client.hget(s.keys.job(job_id), "st")
        return st.decode() if st else None

    def queue_of(self, job_id: str) -> str | None:
        s = self.store
        with translated(s.url):
            q = s.client.hget(s.keys.job(job_id), "q")
        return q.decode() if q else None

    def cancel(self, job_id: str, queue: str, reason: str) -> int | str | None:
        """1 when canceled, 'active' when a running job was asked to stop, else its state."""
        keys, args = self.cancel_call(job_id, queue, reason)
        with translated(self.store.url):
            return _state_reply(self.store.scripts.cancel(keys=keys, args=args))

    def cancel_call(self, job_id: str, queue: str,
                    reason: str) -> tuple[list[Any], list[Any]]:
        s = self.store
        k = s.keys
        keys = CANCEL.keys(job=k.job(job_id), queued=k.queued(queue), scheduled=k.scheduled(queue),
                           waiting=k.state_index(queue, "waiting"), canceled=k.canceled(queue),
                           done=k.done(job_id), wake_list=k.wake(queue), events=k.events(),
                           cancels=k.cancels(), held=k.held())
        args = CANCEL.args(id=job_id, reason=reason, prefix=s.prefix,
                           canceled_ttl_ms=int(s.defaults.dead_ttl * 1000),
                           max_canceled=s.defaults.max_dead, events_len=s.events_len,
                           queue=queue)
        return keys, args

    def requeue(self, job_id: str, queue: str,
                states: Sequence[str] = ("dead",)) -> int | str | None:
        """Queue a dead (or, when ``states`` allows, canceled) job again with fresh attempts.

        1 when requeued, -1 when the job is on another queue, else its state or None.
        """
        keys, args = self.requeue_call(job_id, queue, states)
        with translated(self.store.url):
            return _state_reply(self.store.scripts.requeue(keys=keys, args=args))

    def requeue_call(self, job_id: str, queue: str,
                     states: Sequence[str]) -> tuple[list[Any], list[Any]]:
        s = self.store
        k = s.keys
        return (REQUEUE.keys(job=k.job(job_id), dead=k.dead(queue), canceled=k.canceled(queue),
                             queued=k.queued(queue), wake_list=k.wake(queue), sequence=k.seq(),
                             events=k.events()),
                REQUEUE.args(id=job_id, queue=queue, events_len=s.events_len,
                             prefix=s.prefix, states=",".join(states)))

    def cancel_requests(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Which of these running jobs someone asked to cancel, with the reason given."""
        s = self.store
        if not job_ids:
            return {}
        with translated(s.url):
            flags = s.client.smismember(s.keys.cancels(), list(job_ids))
            asked = [j for j, flag in zip(job_ids, flags, strict=True) if flag]
            if not asked:
                return {}
            pipe = s.client.pipeline(transaction=False)
            for job_id in asked:
                pipe.hget(s.keys.job(job_id), "cx")
            reasons = pipe.execute()
        return {j: (r or b"canceled by request").decode("utf-8", "replace")
                for j, r in zip(asked, reasons, strict=True)}

    def purge(self, job_id: str, queue: str,
              states: Sequence[str] = ("dead",)) -> int | str | None:
        """Delete a job in one of ``states`` (final ones only) with its log for good.

        1 when deleted, -1 when the job is on another queue, else its state or None.
        """
        keys, args = self.purge_call(job_id, queue, states)
        with translated(self.store.url):
            return _state_reply(self.store.scripts.purge(keys=keys, args=args))

    def purge_call(self, job_id: str, queue: str,
                   states: Sequence[str]) -> tuple[list[Any], list[Any]]:
        k = self.store.keys
        return (PURGE.keys(job=k.job(job_id), completed=k.completed(queue), dead=k.dead(queue),
                           canceled=k.canceled(queue), log=k.log(job_id), done=k.done(job_id),
                           kids=k.kids(job_id)),
                PURGE.args(id=job_id, queue=queue, states=",".join(states)))

    def resume(self, queue: str) -> bool:
        s = self.store
        keys = RESUME.keys(paused=s.keys.paused(), queued=s.keys.queued(queue),
                           wake_list=s.keys.wake(queue))
        with translated(s.url):
            return bool(s.scripts.resume(keys=keys, args=RESUME.args(queue=queue)))

    def watch(self, job_id: str) -> str | None:
        """Count one more result waiter unless the job is final; its state, or None."""
        s = self.store
        with translated(s.url):
            st = s.scripts.watch(keys=WATCH.keys(job=s.keys.job(job_id)), args=WATCH.args())
        return st.decode() if st else None

    def wait_done(self, job_id: str, timeout: float) -> None:
        s = self.store
        wait = max(0.01, min(timeout, s.settings.socket_timeout * 0.6))
        with translated(s.url):
            s.client.blpop([s.keys.done(job_id)], timeout=wait)


def _state_reply(reply: Any) -> int | str | None:
    if reply is None:
        return None
    if isinstance(reply, bytes):
        return reply.decode()
    return int(reply)
