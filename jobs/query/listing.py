"""Jobs of one queue in one state, filtered, a page at a time.

Never the whole index: ids come in chunks behind the cursor, their records in one
pipeline per chunk, and a filter that matches little stops after ``scan`` jobs and
hands back a cursor to continue from (the page says so), so a request's cost is
bounded whatever the index holds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import NamedTuple

import msgspec

from jobs.errors import ConfigurationError
from jobs.query.cursor import Position, decode, encode, walk
from jobs.query.filters import JobFilter
from jobs.records import JobRecord, record_from_hash
from jobs.states import JobState
from jobs.store.broker import Broker
from jobs.store.connection import translated
from jobs.store.keys import check_name

LISTED_STATES = tuple(s.value for s in (
    JobState.QUEUED, JobState.SCHEDULED, JobState.WAITING, JobState.ACTIVE,
    JobState.COMPLETED, JobState.DEAD, JobState.CANCELED))

MAX_PAGE = 500
CHUNK = 200


class JobPage(msgspec.Struct, kw_only=True):
    jobs: list[JobRecord]
    next: str | None  # the cursor of the following page; None at the end
    scanned: int  # jobs looked at for this page
    exhausted: bool  # False: the scan budget ran out first; ``next`` goes on from there


class Part(NamedTuple):
    """One sorted set that holds jobs of a queue in a state."""

    name: str  # "": the state's own index; else the limit whose held set this is
    key: str

    def holds(self, record: JobRecord, queue: str) -> bool:
        """Whether ``record`` is listed from this part: a function's limit holds jobs of
        every queue, and a job released meanwhile is listed from the index instead."""
        return not self.name or (record.queue == queue and record.state is JobState.QUEUED
                                 and record.held_by == self.name)


def _rank(name: str) -> tuple[int, str]:
    """Walk order of the parts: the index, the queue's limit, then functions' by name."""
    return (0, "") if not name else (1 if name.startswith("q:") else 2, name)


def checked_state(state: str) -> str:
    if state not in LISTED_STATES:
        raise ConfigurationError(f"state {state!r} is not one of {', '.join(LISTED_STATES)}")
    return state


def state_index(broker: Broker, queue: str, state: str) -> str:
    return broker.keys.state_index(check_name("queue", queue), checked_state(state))


def index_parts(broker: Broker, queue: str, state: str) -> list[Part]:
    """The sorted sets holding ``queue``'s jobs in ``state``, oldest-first walk order.

    A queued job that a rate or concurrency limit holds back stays queued but leaves the
    queue's index for the limit's held set (``jobs.limits``): the held sets of the
    queue's limit and of every function's limit follow the index, looked at only while
    the queue has held jobs.
    """
    parts = [Part("", state_index(broker, queue, state))]
    if state != JobState.QUEUED.value:
        return parts
    keys = broker.keys
    with translated(broker.url):
        if not int(broker.client.hget(keys.held(), queue) or 0):
            return parts
        defined: dict[bytes, bytes] = broker.client.hgetall(keys.limits())
    names = {f"q:{queue}"} | {n.decode() for n in defined if n.startswith(b"fn:")}
    return parts + [Part(n, keys.limit_held(n)) for n in sorted(names, key=_rank)]


def walk_parts(broker: Broker, parts: list[Part], after: Position | None, at: str,
               newest_first: bool, size: int) -> Iterator[tuple[Part, list[Position]]]:
    """Chunks of every part in order, from ``after`` in part ``at`` (a part that is gone
    since is passed by its place in the order)."""
    for part in (reversed(parts) if newest_first else parts):
        start = None
        if after is not None:
            if part.name == at:
                start = after
            elif (_rank(part.name) < _rank(at)) != newest_first:
                continue  # walked already
        for chunk in walk(broker, part.key, start, newest_first, size):
            yield part, chunk


def records_of(broker: Broker, ids: list[str]) -> list[JobRecord]:
    """The records of ``ids`` that still exist, in order (one pipeline)."""
    return [record_from_hash(i, fields)
            for i, fields in zip(ids, broker.jobs.fetch_many(ids), strict=True) if fields]


def list_jobs(broker: Broker, queue: str, state: str, *, where: JobFilter | None = None,
              cursor: str | None = None, limit: int = 50, newest_first: bool = True,
              scan: int = 20_000) -> JobPage:
    """A page of jobs in ``state`` on ``queue`` that ``where`` matches.

    Order follows the state's index: queued jobs in the order they run (newest_first
    reverses it), scheduled by due time, active by lease end, waiting by enqueue,
    completed by expiry, dead and canceled by when they ended. Queued jobs that a limit
    holds back (``held_by`` set) come after the others, in their queue order, limit by
    limit (the queue's, then functions' by name); newest_first reverses the whole list,
    so they come first.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise ConfigurationError(f"limit must be 1 to {MAX_PAGE}, not {limit}")
    where = where or JobFilter()
    parts = index_parts(broker, queue, state)
    after, at = decode(cursor) if cursor else (None, "")
    found: list[JobRecord] = []
    scanned = 0
    now = time.time()
    last: str | None = None
    size = min(CHUNK, max(limit, 50))
    for part, chunk in walk_parts(broker, parts, after, at, newest_first, size):
        by_id = {r.id: r for r in records_of(broker, [p.member for p in chunk])}
        for position in chunk:
            scanned += 1
            record = by_id.get(position.member)
            if (record is not None and part.holds(record, queue)
                    and where.matches(record, now)):
                found.append(record)
                if len(found) == limit:
                    return JobPage(jobs=found, next=encode(position, part.name),
                                   scanned=scanned, exhausted=True)
        last = encode(chunk[-1], part.name)
        if scanned >= scan:
            return JobPage(jobs=found, next=last, scanned=scanned, exhausted=False)
    return JobPage(jobs=found, next=None, scanned=scanned, exhausted=True)
