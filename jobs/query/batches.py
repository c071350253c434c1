"""Batches as every surface shows them: progress, callbacks and their jobs' states.

``<ns>:batches`` holds every batch id by creation time; a batch's id leaves it when its
record expires (``dead_ttl`` after it finished; see ``_after_final.lua``). Listing walks
it newest first behind a cursor, as job lists do, and skips an id whose record is gone
before the index caught up, so a page never loads the whole index.
"""

from __future__ import annotations

import msgspec

from jobs.batch import CALLBACKS, PROGRESS_FIELDS, BatchProgress, progress_of
from jobs.errors import ConfigurationError, JobNotFound
from jobs.query.cursor import Position, decode, encode, walk
from jobs.query.listing import records_of
from jobs.records import JobRecord
from jobs.store.broker import Broker
from jobs.store.connection import translated
from jobs.store.keys import check_name

MAX_PAGE = 500
SCAN = 5_000  # index entries one page looks at, at most (ids of expired batches included)
_FIELDS = (*PROGRESS_FIELDS, "name", "te", "tf", *(f"{kind}:q" for kind in CALLBACKS))


class BatchCallback(msgspec.Struct, frozen=True, kw_only=True):
    """A callback the batch was given: ``state`` is its job's state, ``pending`` until the
    batch ends, ``not run`` when the outcome calls for the other one, else ``expired``."""

    kind: str  # complete, success or failure
    job_id: str
    state: str


class BatchView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    created_at: float | None  # epoch seconds
    finished_at: float | None  # when the last member ended and the callbacks were enqueued
    progress: BatchProgress
    callbacks: list[BatchCallback]


class BatchPage(msgspec.Struct, kw_only=True):
    batches: list[BatchView]
    next: str | None  # the cursor of the following page; None at the end
    scanned: int  # index entries looked at


class BatchMembers(msgspec.Struct, kw_only=True):
    """One page of a batch's members in the order they were given: each id with its record
    (None once the record expired)."""

    ids: list[str]
    records: list[JobRecord | None]
    total: int
    next_offset: int | None


def list_batches(broker: Broker, cursor: str | None = None, limit: int = 50) -> BatchPage:
    """A page of batches, newest first; pass ``next`` back as ``cursor`` for the next."""
    if not 1 <= limit <= MAX_PAGE:
        raise ConfigurationError(f"limit must be 1 to {MAX_PAGE}, not {limit}")
    after = decode(cursor)[0] if cursor else None
    found: list[BatchView] = []
    scanned = 0
    last: Position | None = None
    for chunk in walk(broker, broker.keys.batches(), after, newest_first=True, size=limit):
        views = batch_views(broker, [p.member for p in chunk])
        for position in chunk:
            scanned += 1
            last = position
            view = views.get(position.member)
            if view is not None:
                found.append(view)
                if len(found) == limit:
                    return BatchPage(batches=found, next=encode(position), scanned=scanned)
        if scanned >= SCAN:
            return BatchPage(batches=found, next=encode(last) if last else None,
                             scanned=scanned)
    return BatchPage(batches=found, next=None, scanned=scanned)


def batch_view(broker: Broker, batch_id: str) -> BatchView:
    view = batch_views(broker, [check_name("batch id", batch_id)]).get(batch_id)
    if view is None:
        raise JobNotFound(f"no batch {batch_id!r}: never created, or expired after it ended")
    return view


def batch_views(broker: Broker, ids: list[str]) -> dict[str, BatchView]:
    """The batches of ``ids`` whose record exists, by id (two round trips)."""
    k = broker.keys
    with translated(broker.url):
        pipe = broker.client.pipeline(transaction=False)
        for bid in ids:
            pipe.hmget(k.batch(bid), *_FIELDS)
        rows = dict(zip(ids, pipe.execute(), strict=True))
        wanted = [f"{bid}.on_{kind}" for bid, raw in rows.items() if raw[4] is not None
                  for kind, queue in zip(CALLBACKS, raw[8:], strict=True) if queue is not None]
        for job_id in wanted:
            pipe.hget(k.job(job_id), "st")
        states = dict(zip(wanted, pipe.execute(), strict=True)) if wanted else {}
    views = {}
    for bid, raw in rows.items():
        progress = progress_of(raw)
        if progress is None:
            continue
        views[bid] = BatchView(
            id=bid, name=(raw[5] or b"").decode(), created_at=_seconds(raw[6]),
            finished_at=_seconds(raw[7]), progress=progress,
            callbacks=[_callback(bid, kind, progress, states)
                       for kind, queue in zip(CALLBACKS, raw[8:], strict=True)
                       if queue is not None])
    return views


def _callback(bid: str, kind: str, progress: BatchProgress,
              states: dict[str, bytes | None]) -> BatchCallback:
    job_id = f"{bid}.on_{kind}"
    state = states.get(job_id)
    if state is not None:
        said = state.decode()
    elif not progress.finished:
        said = "pending"
    else:
        ok = not (progress.failed or progress.canceled)
        runs = kind == "complete" or (kind == "success") == ok
        said = "expired" if runs else "not run"
    return BatchCallback(kind=kind, job_id=job_id, state=said)


def batch_members(broker: Broker, batch_id: str, offset: int = 0,
                  limit: int = 50) -> BatchMembers:
    """Members ``offset`` to ``offset + limit`` (the list never changes once written)."""
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise ConfigurationError(f"limit must be 1 to {MAX_PAGE} and offset at least 0")
    check_name("batch id", batch_id)
    with translated(broker.url):
        pipe = broker.client.pipeline(transaction=False)
        pipe.lrange(broker.keys.batch_jobs(batch_id), offset, offset + limit - 1)
        pipe.hget(broker.keys.batch(batch_id), "total")  # the list's length, never changed
        raw, total = pipe.execute()
    ids = [i.decode() for i in raw]
    by_id = {r.id: r for r in records_of(broker, ids)}
    end = offset + len(ids)
    return BatchMembers(ids=ids, records=[by_id.get(i) for i in ids], total=int(total or 0),
                        next_offset=end if end < int(total or 0) else None)


def _seconds(ms: bytes | None) -> float | None:
    return int(ms) / 1000.0 if ms else None
