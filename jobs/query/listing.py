"""Jobs of one queue in one state, filtered, a page at a time.

Never the whole index: ids come in chunks behind the cursor, their records in one
pipeline per chunk, and a filter that matches little stops after ``scan`` jobs and
hands back a cursor to continue from (the page says so), so a request's cost is
bounded whatever the index holds.
"""

from __future__ import annotations

import time

import msgspec

from jobs.errors import ConfigurationError
from jobs.query.cursor import Position, decode, encode, walk
from jobs.query.filters import JobFilter
from jobs.records import JobRecord, record_from_hash
from jobs.states import JobState
from jobs.store.broker import Broker
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


def checked_state(state: str) -> str:
    if state not in LISTED_STATES:
        raise ConfigurationError(f"state {state!r} is not one of {', '.join(LISTED_STATES)}")
    return state


def state_index(broker: Broker, queue: str, state: str) -> str:
    return broker.keys.state_index(check_name("queue", queue), checked_state(state))


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
    completed by expiry, dead and canceled by when they ended.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise ConfigurationError(f"limit must be 1 to {MAX_PAGE}, not {limit}")
    where = where or JobFilter()
    index = state_index(broker, queue, state)
    after = decode(cursor) if cursor else None
    found: list[JobRecord] = []
    scanned = 0
    now = time.time()
    last: Position | None = None
    for chunk in walk(broker, index, after, newest_first, size=min(CHUNK, max(limit, 50))):
        by_id = {r.id: r for r in records_of(broker, [p.member for p in chunk])}
        for position in chunk:
            scanned += 1
            last = position
            record = by_id.get(position.member)
            if record is not None and where.matches(record, now):
                found.append(record)
                if len(found) == limit:
                    return JobPage(jobs=found, next=encode(position), scanned=scanned,
                                   exhausted=True)
        if scanned >= scan:
            return JobPage(jobs=found, next=encode(last) if last else None, scanned=scanned,
                           exhausted=False)
    return JobPage(jobs=found, next=None, scanned=scanned, exhausted=True)
