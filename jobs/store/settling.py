"""Outcomes and claims settled outside the hot call: a completion or failure written
alone, a claim given back, the leases renewed, what a token holds. ``Broker`` is one;
the supervisor's duties and a worker's slow paths call these."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobs.options import Prepared
from jobs.records import AttemptError, Claimed, encoder
from jobs.store.connection import translated
from jobs.store.layouts import CLAIM, CLAIMED_BY, FAIL, RELEASE, RENEW
from jobs.store.store import Store
from jobs.timeseries import bucket, minute


class Settling(Store):
    def _queue_keys(self, queues: Sequence[str]) -> list[str]:
        """The keys of the queues a claim looks at, as the claim scripts take them."""
        keys: list[str] = []
        for q in queues:
            keys += CLAIM.key_item(queued=self.keys.queued(q), active=self.keys.active(q),
                                   wake_list=self.keys.wake(q))
        return keys


    def complete(self, job: Claimed, result: bytes, result_ttl: float,
                 duration: float = 0.0) -> str | None:
        """"now" when written by this call, "before" when an earlier call with this token
        wrote it (a resend), None when the token no longer holds the job."""
        k = self.keys
        # In COMPLETE's order (a hot call: see jobs.store.layouts).
        keys = [k.job(job.id), k.active(job.queue), k.completed(job.queue), k.done(job.id),
                k.events()]
        args = [job.id, job.token, result, max(1, int(result_ttl * 1000)), self.prefix,
                self.events_len, job.queue, int(duration * 1000)]
        with translated(self.url):
            # Safe to resend: a second write with the same token reports success, no change.
            reply = int(self.runner.run(self.scripts.complete, keys, args))
        return {1: "now", 2: "before"}.get(reply)

    def complete_claim(self, job_id: str, queue: str, token: str, result: bytes,
                       result_ttl: float, duration: float) -> str | None:
        """``complete`` for a job known by id, queue and token (a dead worker's outcome
        that the supervisor writes for it)."""
        job = Claimed(id=job_id, queue=queue, token=token, spec=None, attempt=0, priority=0,
                      errors=(), enqueued_at=0.0, started_at=0.0)
        return self.complete(job, result, result_ttl, duration)

    def fail(
        self,
        job_id: str,
        queue: str,
        token: str,
        errors: Sequence[AttemptError],
        retry_in: float | None,
        *,
        function: str = "?",
        only_if_expired: bool = False,
        hooks: Sequence[Prepared] = (),
    ) -> str | None:
        """Retry in ``retry_in`` seconds, or dead when ``None``; returns the new state or None.

        ``hooks`` are jobs enqueued with the death, in the same step (none with a retry).
        """
        k = self.keys
        last = errors[-1] if errors else None
        summary = f"{last.type}: {last.message}"[:500] if last else ""
        duration = last.duration if last else 0.0
        # In FAIL's order (a hot call: see jobs.store.layouts); the hook, rare, by name.
        keys = [k.job(job_id), k.active(queue), k.scheduled(queue), k.dead(queue),
                k.canceled(queue), k.done(job_id), k.timers(), k.events(), k.stats(minute()),
                k.totals(), k.seq(), k.queues()]
        args: list[Any] = [
            job_id, token, encoder.encode(list(errors)),
            -1 if retry_in is None else int(retry_in * 1000), "1" if only_if_expired else "0",
            self.prefix, int(self.defaults.dead_ttl * 1000), self.defaults.max_dead,
            self.events_len, queue, function, int(duration * 1000),
            bucket(duration) if last and last.duration else "", summary,
        ]
        for hook in hooks if retry_in is None else ():
            keys += FAIL.key_item(hook_job=k.job(hook.id), hook_queued=k.queued(hook.queue),
                                  hook_wake_list=k.wake(hook.queue))
            args += FAIL.arg_item(hook_id=hook.id, hook_spec=hook.spec,
                                  hook_priority=hook.priority, hook_queue=hook.queue)
        with translated(self.url):
            reply = self.runner.run(self.scripts.fail, keys, args)
        return reply.decode() if isinstance(reply, bytes) else None

    def claimed_by(self, token: str, queues: Sequence[str]) -> list[tuple[str, str, str]]:
        """(job id, queue, token) of each job claim ``token`` took and still holds (with a
        batch claim's, several), looked for among the running jobs of ``queues`` (rare: a
        worker died mid-claim)."""
        with translated(self.url):
            reply = self.scripts.claimed_by(
                keys=CLAIMED_BY.keys(self._queue_keys(queues)),
                args=CLAIMED_BY.args(prefix=self.prefix, token=token))
        return [(job_id.decode(), queues[int(pos) - 1], tok.decode())
                for job_id, pos, tok in zip(reply[::3], reply[1::3], reply[2::3], strict=True)]

    def release(self, job: Claimed) -> bool:
        return self.release_claim(job.id, job.queue, job.token)

    def release_claim(self, job_id: str, queue: str, token: str) -> bool:
        """Give a claimed job back without spending an attempt (graceful stop, kill on
        stop, a worker that died before running it); False when ``token`` no longer holds it."""
        keys, args = self._release_call(job_id, queue, token)
        with translated(self.url):
            return bool(self.scripts.release(keys=keys, args=args))

    def release_many(self, claims: Sequence[tuple[str, str, str]]) -> list[bool]:
        """``release_claim`` for each ``(job_id, queue, token)``, pipelined in one round trip
        (a worker giving back the jobs of a batch it will not start)."""
        with translated(self.url):
            pipe = self.client.pipeline(transaction=False)
            for job_id, queue, token in claims:
                keys, args = self._release_call(job_id, queue, token)
                self.scripts.release(keys=keys, args=args, client=pipe)
            return [bool(r) for r in pipe.execute()]

    def _release_call(self, job_id: str, queue: str,
                      token: str) -> tuple[list[Any], list[Any]]:
        k = self.keys
        return (RELEASE.keys(job=k.job(job_id), active=k.active(queue), queued=k.queued(queue),
                             wake_list=k.wake(queue), events=k.events(),
                             canceled=k.canceled(queue), done=k.done(job_id)),
                RELEASE.args(id=job_id, token=token, events_len=self.events_len, queue=queue,
                             prefix=self.prefix))

    def renew(self, claims: Sequence[tuple[str, str, str]], lease: float) -> list[int]:
        """Extend the leases of ``(job_id, queue, token)`` claims; return the indexes of
        those whose token no longer holds its job."""
        if not claims:
            return []
        keys: list[str] = []
        each: list[Any] = []
        for job_id, queue, token in claims:
            keys += RENEW.key_item(job=self.keys.job(job_id), active=self.keys.active(queue))
            each += RENEW.arg_item(id=job_id, token=token)
        with translated(self.url):
            lost = self.scripts.renew(keys=RENEW.keys(keys),
                                      args=RENEW.args(each, lease_ms=int(lease * 1000)))
        return [int(i) - 1 for i in lost]
