"""The store: every Redis read and write of the job library goes through a ``Broker``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec
import redis

from jobs.encryption.sealer import Sealer
from jobs.environment import library_settings
from jobs.errors import JobNotFound, UnknownLimit
from jobs.options import Prepared, pack_job
from jobs.records import Claimed, claimed_from_reply
from jobs.settings import EncryptionSettings, JobDefaults, RedisSettings
from jobs.store.completions import WRITTEN, Completion, batch_token, pack_completion
from jobs.store.connection import make_client, translated
from jobs.store.job_ops import JobOperations
from jobs.store.layouts import (
    CLAIM,
    ENQUEUE,
    ENQUEUE_ONE,
    FINISH_BATCH,
    FINISH_CLAIM,
)
from jobs.store.maintenance import Maintenance, count_transaction
from jobs.store.runner import Packed, items, joined
from jobs.store.settling import Settling
from jobs.store.slot_owner import is_cluster_url
from jobs.store.urls import redact, resolve_url


def _counts_applied(before: Sequence[tuple[Any, ...]],
                    counted: Callable[[bool], None]) -> Callable[[list[Any]], None]:
    """Tells ``counted`` whether Redis applied any of the counter increments ``before``
    (a ``count_transaction``: its EXEC answers for all of them, or refuses them all)."""
    inside = before[1:-1]

    def answered(replies: list[Any]) -> None:
        done = replies[-1]
        counted(isinstance(done, list) and any(
            not isinstance(reply, Exception)
            for reply, command in zip(done, inside, strict=True) if command[0] == "HINCRBY"))

    return answered


# Seconds plain jobs keep going through the general enqueue script once limits were
# found in the namespace, before the lean script is tried again.
LIMITS_RECHECK = 60.0


class Broker(Settling):
    """The typed API over one namespace's ``Store`` (client, scripts, keys, defaults).

    Enqueue, claim, finish, fail, release and renew, the path every job takes, are its
    own methods, reading the store's state in one lookup. The rest are its parts:
    ``broker.jobs`` (reads and commands on jobs and queues) and ``broker.maintenance``
    (what supervisors run on a timer, and the outcome counters).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        redis_settings: RedisSettings | None = None,
        defaults: JobDefaults | None = None,
        client: redis.Redis | None = None,
        data_dir: str | None = None,
        retries: int = 3,
        encryption: EncryptionSettings | None = None,
    ) -> None:
        if redis_settings is None or defaults is None:
            found = library_settings()  # what the supervisor of JOBVISOR_CONFIG uses
            redis_settings = redis_settings or found.redis
            defaults = defaults or found.defaults
            data_dir = data_dir or found.data_dir
            encryption = encryption or found.encryption
        url = url or resolve_url(redis_settings, data_dir)
        if client is None:
            client = make_client(url, redis_settings, retries)
        super().__init__(url, client, redis_settings, defaults, Sealer(encryption))
        self.jobs: Final = JobOperations(self)
        self.maintenance: Final = Maintenance(self)
        self._enqueue_keys: dict[str, list[str]] = {}  # by queue name
        self._enqueue_one_keys: dict[str, list[str]] = {}  # by queue name
        # Until then, plain jobs go through the general enqueue script: limits were found.
        self._limits_seen_until = 0.0
        # What the claim calls send the same on every call of a worker, built once by name:
        # claim's keys and arguments by (queues, lease), and the keys and arguments after
        # the per-call ones of the hot call (finish_claim) by (queue, queues, lease).
        self._claim_fixed: dict[tuple[tuple[str, ...], float],
                                tuple[list[str], str, int, int]] = {}
        self._hot_fixed: dict[tuple[str, tuple[str, ...], float],
                              tuple[str, bytes, bytes, bytes, int]] = {}

    def __repr__(self) -> str:
        return f"<Broker {redact(self.url)} namespace={self.keys.ns}>"

    def ping(self) -> None:
        with translated(self.url):
            self.client.ping()

    def cluster_primary(self) -> str | None:
        """On a cluster, ``host:port`` of the primary that serves this namespace's slot,
        as a connection finds it now (it moves on failover and slot migration); None on
        a single server or through Sentinel."""
        if not is_cluster_url(self.url):
            return None
        pool = self.client.connection_pool
        with translated(self.url):
            conn = pool.get_connection()  # connected: it asked the cluster on connect
            try:
                return f"{conn.host}:{conn.port}"
            finally:
                pool.release(conn)

    # -- enqueue ---------------------------------------------------------------------------

    def enqueue(self, queue: str, jobs: Sequence[Prepared]) -> list[str]:
        """Write jobs of one queue in one script call; returns the id each call resolved to.

        That is the job's own id, or the id of the job already holding its uniqueness key.
        """
        if (len(jobs) == 1 and _plain(jobs[0]) and time.monotonic() >= self._limits_seen_until
                and self._enqueue_one(queue, jobs[0])):
            return [jobs[0].id]
        keys, args = self._enqueue_args(queue, jobs, resent="0")
        with translated(self.url):
            # Safe to resend: ids are fixed before the call, and a resend (flagged) finds
            # the jobs its first send may have written.
            reply = self.runner.run(self.scripts.enqueue, keys, args,
                                    resend_flag=ENQUEUE.resend_flag)
        return _enqueued_ids(jobs, reply)

    def _enqueue_one(self, queue: str, job: Prepared) -> bool:
        """One plain job through the lean script; False when the namespace has limits
        (nothing written: the general script applies them)."""
        keys = self._enqueue_one_keys.get(queue)
        if keys is None:
            k = self.keys
            keys = self._enqueue_one_keys[queue] = ENQUEUE_ONE.keys_after(
                "job", queued=k.queued(queue), wake_list=k.wake(queue), sequence=k.seq(),
                queues=k.queues(), events=k.events(), limits=k.limits(),
                enqueued=k.enqueued())
        # In ENQUEUE_ONE's order (a hot call: see jobs.store.layouts).
        with translated(self.url):
            # Safe to resend: flagged as a resend, the script finds the job its first send
            # may have written.
            reply = self.runner.run(
                self.scripts.enqueue_one, [self.keys.job(job.id), *keys],
                [queue, job.id, job.spec, job.priority, job.function, self.events_len, "0"],
                resend_flag=ENQUEUE_ONE.resend_flag)
        if reply == b"limits":
            # Limits exist: send plain jobs through the general script for a while (a
            # namespace's limits are defined once and seldom all removed).
            self._limits_seen_until = time.monotonic() + LIMITS_RECHECK
            return False
        return True

    def enqueue_batches(self, batches: Sequence[tuple[str, Sequence[Prepared]]]) -> list[str]:
        """Several enqueue script calls in one pipelined round trip, run in the order given."""
        with translated(self.url):
            pipe = self.client.pipeline(transaction=False)
            self.enqueue_into(pipe, batches)
            replies = pipe.execute()
        ids: list[str] = []
        for (_, jobs), reply in zip(batches, replies, strict=True):
            ids += _enqueued_ids(jobs, reply)
        return ids

    def enqueue_into(self, pipe: Any, batches: Sequence[tuple[str, Sequence[Prepared]]]) -> None:
        """Add enqueue script calls to a pipeline (or a MULTI transaction) of the caller's."""
        for queue, jobs in batches:
            # A pipeline may be sent again whole (redis-py's retry): always a possible resend.
            keys, args = self._enqueue_args(queue, jobs, resent="1")
            self.scripts.enqueue(keys=keys, args=args, client=pipe)

    def _enqueue_args(self, queue: str, jobs: Sequence[Prepared],
                      resent: str) -> tuple[list[str], list[Any]]:
        keys = self._enqueue_keys.get(queue)
        if keys is None:
            k = self.keys
            keys = self._enqueue_keys[queue] = ENQUEUE.keys(
                queued=k.queued(queue), scheduled=k.scheduled(queue), wake_list=k.wake(queue),
                sequence=k.seq(), queues=k.queues(), timers=k.timers(),
                completed=k.completed(queue), dead=k.dead(queue), canceled=k.canceled(queue),
                events=k.events(), waiting=k.state_index(queue, "waiting"), limits=k.limits(),
                enqueued=k.enqueued())
        packed = b"".join(pack_job(p, self._extra(p.extra)) for p in jobs)
        # In ENQUEUE's order (a hot call: see jobs.store.layouts).
        return keys, [queue, len(jobs), self.events_len, self.prefix, packed, resent]

    def _extra(self, extra: dict[str, Any]) -> bytes:
        if not extra:
            return b""
        if "uk" in extra:
            extra = {**extra, "uk": self.keys.unique(extra["uk"])}
        return _json.encode(extra)

    # -- claim and outcomes ----------------------------------------------------------------

    def claim(self, queues: Sequence[str], token: str, lease: float,
              resent: bool = False) -> Claimed | None:
        """Take the first job of the first non-empty queue, with a lease of ``lease`` seconds.

        ``resent``: this token may have claimed already (a reply was lost); that job is
        returned if it did.
        """
        keys, args = self._claim_call(queues, token, lease, resent)
        with translated(self.url):
            # Safe to resend after a lost reply: told it is a resend, the script looks for
            # a job this token holds before it claims.
            reply = self.runner.run(self.scripts.claim, keys, args,
                                    resend_flag=CLAIM.resend_flag)
        return self._claimed(reply, queues, token)

    def wait_and_claim(self, wake: Sequence[str], timeout: float, queues: Sequence[str],
                       token: str, lease: float) -> Claimed | None:
        """Block until an enqueue wakes one of ``wake`` (or ``timeout`` passes), then claim
        as ``claim`` does; the claim travels with the wait, so waking costs no extra trip."""
        wait = max(0.01, min(timeout, self.settings.socket_timeout * 0.6))
        keys, args = self._claim_call(queues, token, lease, resent=False)
        with translated(self.url):
            reply = self.runner.wait_then_run(
                ("BLPOP", *(self.keys.wake(q) for q in wake), wait), self.scripts.claim,
                keys, args, resend_flag=CLAIM.resend_flag)
        return self._claimed(reply, queues, token)

    def _claim_call(self, queues: Sequence[str], token: str, lease: float,
                    resent: bool) -> tuple[list[str], list[Any]]:
        fixed = self._claim_fixed.get((tuple(queues), lease))
        if fixed is None:
            fixed = (CLAIM.keys(self._queue_keys(queues), paused=self.keys.paused(),
                                events=self.keys.events()),
                     self.prefix, int(lease * 1000), self.events_len)
            if len(self._claim_fixed) < 64:  # weighted queues change order: keep it bounded
                self._claim_fixed[(tuple(queues), lease)] = fixed
        keys, prefix, lease_ms, events_len = fixed
        # In CLAIM's order (a hot call: see jobs.store.layouts).
        return keys, [prefix, token, lease_ms, events_len, "1" if resent else "0", *queues]

    def finish_and_claim(self, job: Claimed, result: bytes, result_ttl: float, duration: float,
                         queues: Sequence[str], token: str, lease: float,
                         counts: dict[int, dict[str, int]] | None = None,
                         counted: Callable[[bool], None] | None = None,
                         ) -> tuple[bool, Claimed | None]:
        """Complete ``job`` and claim the next one in one round trip (the hot path).

        ``counts``: outcome counters (as ``maintenance.add_counts`` takes them) sent in the
        same write; ``counted`` is told whether any of them was applied, once that is known
        (even if the script then fails; never if the connection broke before).
        """
        k = self.keys
        script = self.scripts.finish_claim
        fixed = self._hot_fixed.get((job.queue, tuple(queues), lease))
        if fixed is None or fixed[0] != script.sha:
            fixed = self._finish_claim_fixed(script, job.queue, queues, lease)
        _, head, keys_after, args_after, count = fixed
        # What changes per call, in FINISH_CLAIM's order up to "done" and "resent" (a hot
        # call: see jobs.store.layouts); the rest was packed once.
        keys = items((k.job(job.id), k.done(job.id)))
        given = (job.id, job.token, result, max(1, int(result_ttl * 1000)),
                 int(duration * 1000), token)
        message = Packed(joined(count, head, keys, keys_after, items((*given, "0")), args_after),
                         lambda: joined(count, head, keys, keys_after, items((*given, "1")),
                                        args_after))
        before = count_transaction(k, counts) if counts else []
        answered = _counts_applied(before, counted) if before and counted else None
        with translated(self.url):
            done, reply = self.runner.run_after(before, script, message, answered)
        return bool(done), self._claimed(reply or None, queues, token)

    def _finish_claim_fixed(self, script: Any, queue: str, queues: Sequence[str],
                            lease: float) -> tuple[str, bytes, bytes, bytes, int]:
        """What finish_claim sends the same on every call of a worker, packed once: the
        command and script, and the keys and arguments after the per-call ones."""
        k = self.keys
        keys_after = FINISH_CLAIM.keys_after(
            "done", self._queue_keys(queues), active=k.active(queue),
            completed=k.completed(queue), events=k.events(), paused=k.paused())
        args_after = FINISH_CLAIM.args_after(
            "resent", queues, queue=queue, prefix=self.prefix, events_len=self.events_len,
            lease_ms=int(lease * 1000))
        n_keys = 2 + len(keys_after)
        fixed = (script.sha, items(("EVALSHA", script.sha, n_keys)), items(keys_after),
                 items(args_after), 3 + n_keys + 7 + len(args_after))
        if len(self._hot_fixed) < 64:  # weighted queues change order: keep it bounded
            self._hot_fixed[(queue, tuple(queues), lease)] = fixed
        return fixed

    def finish_batch(self, done: Sequence[Completion], want: int, queues: Sequence[str],
                     token: str, lease: float, resent: bool = False,
                     counts: dict[int, dict[str, int]] | None = None,
                     counted: Callable[[bool], None] | None = None,
                     ) -> tuple[list[str | None], list[Claimed]]:
        """Complete the jobs ``done`` and claim up to ``want`` jobs in one round trip (the
        hot path of a worker claiming short jobs in batches).

        Returns, per completion, "now" when this call wrote it, "before" when an earlier
        call with its token did (a resend), None when its token no longer held the job;
        and the claimed jobs: the first under ``token``, the i-th (from 2 on)
        under ``token+i`` (``batch_token``). ``resent``: this call may have run before (its
        reply was lost); what it claimed then is returned, not claimed again. ``counts``
        and ``counted`` as for ``finish_and_claim``.
        """
        keys = self._claim_call(queues, token, lease, resent)[0]  # built once, kept
        position = {q: i for i, q in enumerate(queues, 1)}
        packed = b"".join(pack_completion(c, position[c.job.queue]) for c in done)
        # In FINISH_BATCH's order (a hot call: see jobs.store.layouts).
        args = [self.prefix, token, int(lease * 1000), self.events_len,
                "1" if resent else "0", want, packed, *queues]
        message = Packed.whole(self.scripts.finish_batch, keys, args, FINISH_BATCH.resend_flag)
        before = count_transaction(self.keys, counts) if counts else []
        answered = _counts_applied(before, counted) if before and counted else None
        with translated(self.url):
            written, claimed = self.runner.run_after(before, self.scripts.finish_batch,
                                                     message, answered)
        return ([WRITTEN.get(int(w)) for w in written],
                [claimed_from_reply(reply, queues, batch_token(token, i))
                 for i, reply in enumerate(claimed, 1)])

    def _claimed(self, reply: Any, queues: Sequence[str], token: str) -> Claimed | None:
        return None if reply is None else claimed_from_reply(reply, queues, token)


_json = msgspec.json.Encoder()


def _plain(job: Prepared) -> bool:
    """A job the lean enqueue script takes: a generated id, due now, no workflow options."""
    return not job.extra and not job.custom_id and job.delay_ms <= 0 and job.at_ms < 0


def _enqueued_ids(jobs: Sequence[Prepared], reply: Any) -> list[str]:
    """Map the enqueue script's reply to ids; a missing parent or an undefined limit
    raises (no job was written)."""
    if reply and reply[0] == b"missing":
        raise JobNotFound(
            f"job {reply[1].decode()} depends on job {reply[2].decode()}, which does not exist "
            "(never enqueued, purged, or its record expired); nothing was enqueued"
        )
    if reply and reply[0] == b"nolimit":
        raise UnknownLimit(reply[2].decode(), reply[1].decode())
    return [r[1:].decode() if isinstance(r, bytes) and r.startswith(b"=") else p.id
            for p, r in zip(jobs, reply, strict=True)]


_default: Broker | None = None
_default_lock = threading.Lock()


def connect(url: str | None = None, **kwargs: Any) -> Broker:
    """Create a broker and make it the process default used by ``fn.enqueue`` and ``Job``."""
    global _default
    broker = Broker(url, **kwargs)
    with _default_lock:
        _default = broker
    return broker


def default_broker() -> Broker:
    """The process default broker, created on first use from the environment."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Broker()
        return _default
