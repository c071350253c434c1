"""Enqueueing calls: check and encode each one, then write them grouped by queue in one
pipelined round trip. ``Queue``, ``fn.enqueue``, chains, batches and cron all end here."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any

import msgspec

import jobs.tracing as tracing
from jobs.encryption.sealer import Sealer
from jobs.errors import JobNotFound, UnknownLimit
from jobs.job import Job
from jobs.options import Call, Prepared, prepare
from jobs.priority import Priority
from jobs.rates import DECLARED
from jobs.registry import find
from jobs.store.broker import Broker, default_broker
from jobs.store.connection import translated

if TYPE_CHECKING:  # annotations only: jobs.decorator enqueues
    from jobs.decorator import JobFunction

CHUNK = 1000


def sealer_for(call: Call, fn: JobFunction[Any, Any] | None, broker: Broker) -> Sealer | None:
    """The broker's sealer when this call is to be encrypted: asked by its enqueue, by its
    function's ``@job(encrypt=True)`` or by ``[encryption] encrypt_all``."""
    sealer = broker.sealer
    if call.options.encrypt or sealer.settings.encrypt_all or (
            fn is not None and fn.job_options.encrypt):
        return sealer
    return None


def prepare_call(call: Call, broker: Broker, *, sealing: bool = True) -> Prepared:
    """``sealing=False``: never encrypted (a job run inline is never stored)."""
    fn = find(call.function)
    p = prepare(call, default_queue=broker.defaults.queue,
                default_priority=int(Priority.NORMAL),
                max_bytes=broker.defaults.max_payload_bytes,
                sealer=sealer_for(call, fn, broker) if sealing else None)
    if fn is not None and (fn.job_options.limit is not None or fn.job_options.limits):
        # Publish the function's limits with its jobs, so they apply before any worker starts.
        extra = dict(p.extra)
        if fn.job_options.limit is not None:
            extra["ldef"] = fn.job_options.limit + DECLARED
        if fn.job_options.limits:
            extra["lfn"] = "|".join(fn.job_options.limits) + DECLARED
        p = msgspec.structs.replace(p, extra=extra)
    return p


def check_limits(prepared: Sequence[Prepared], broker: Broker) -> None:
    """Refuse before writing anything when a job names a limit that is not defined.

    The enqueue script checks again atomically; this check keeps a call written in
    several script calls (queues, chunks, a batch) from being written in part.
    """
    wanted = sorted({name for p in prepared
                     for name in [*p.extra.get("ln", ()), *_attached(p.extra.get("lfn"))]})
    if not wanted:
        return
    with translated(broker.url):
        found = broker.client.hmget(broker.keys.limits(), [f"n:{n}" for n in wanted])
    for name, definition in zip(wanted, found, strict=True):
        if definition is None:
            raise UnknownLimit(name)


def _attached(published: str | None) -> list[str]:
    return published.split()[0].split("|") if published else []


def enqueue_call(call: Call, broker: Broker | None = None) -> Job:
    """Enqueue one call; with an existing ``job_id`` returns that job unchanged.

    Always queues: ``jobs.inline.dispatch`` is what may run a call here instead.
    """
    broker = broker or default_broker()
    p = prepare_call(call, broker)
    (job_id,) = tracing.enqueue([p], lambda traced: broker.enqueue(p.queue, traced))
    return Job(job_id, broker)


def enqueue_many(calls: Iterable[Call], broker: Broker | None = None) -> list[Job]:
    """Enqueue many calls: one script call per 1,000 jobs of a queue, all in one pipeline.

    Every call is checked and encoded before anything is written. A job that depends on
    another job of the same call must come after it in ``calls``.
    """
    broker = broker or default_broker()
    prepared = [prepare_call(c, broker) for c in calls]
    return [Job(i, broker) for i in enqueue_prepared(prepared, broker)]


def enqueue_prepared(prepared: list[Prepared], broker: Broker) -> list[str]:
    """Write prepared jobs, grouped by queue (in first-seen order), one pipeline; their ids.

    Jobs with dependencies keep their relative order, so a parent is written before any
    job of the same call that waits on it.
    """
    return tracing.enqueue(prepared, lambda traced: _write(traced, broker))


def _write(prepared: list[Prepared], broker: Broker) -> list[str]:
    if any("deps" in p.extra for p in prepared):
        _check_parents(prepared, broker)
        grouped = _in_order(prepared)  # parents first
    else:
        grouped = by_queue(prepared)
    if len(grouped) > 1:
        check_limits(prepared, broker)
    order = [p for _, items in grouped for p in items]
    ids = broker.enqueue_batches(grouped)
    by_id = {p.id: i for p, i in zip(order, ids, strict=True)}
    return [by_id[p.id] for p in prepared]


def _in_order(prepared: list[Prepared]) -> list[tuple[str, list[Prepared]]]:
    """Runs of consecutive jobs of one queue (up to ``CHUNK``), keeping the given order."""
    runs: list[tuple[str, list[Prepared]]] = []
    for p in prepared:
        if runs and runs[-1][0] == p.queue and len(runs[-1][1]) < CHUNK:
            runs[-1][1].append(p)
        else:
            runs.append((p.queue, [p]))
    return runs


def by_queue(prepared: list[Prepared]) -> list[tuple[str, list[Prepared]]]:
    """Jobs grouped by queue in chunks of ``CHUNK``: one enqueue script call each."""
    queues: dict[str, list[Prepared]] = {}
    for p in prepared:
        queues.setdefault(p.queue, []).append(p)
    return [(queue, list(chunk)) for queue, items in queues.items()
            for chunk in _chunks(items, CHUNK)]


def _check_parents(prepared: list[Prepared], broker: Broker) -> None:
    """Refuse before writing anything when a parent outside this call does not exist.

    The enqueue script checks again atomically; this check keeps a call spanning several
    queues from being written in part.
    """
    ours = {p.id for p in prepared}
    outside = sorted({d for p in prepared for d in p.extra.get("deps", ()) if d not in ours})
    for parent, exists in zip(outside, broker.jobs.exist(outside), strict=True):
        if not exists:
            child = next(p.id for p in prepared if parent in p.extra.get("deps", ()))
            raise JobNotFound(
                f"job {child} depends on job {parent}, which does not exist (never enqueued, "
                "purged, or its record expired); nothing was enqueued"
            )


def _chunks(items: list[Prepared], size: int) -> Iterator[list[Prepared]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk
