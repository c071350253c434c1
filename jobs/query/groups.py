"""Dead letters grouped by function and error type: what broke, how often, lately."""

from __future__ import annotations

import msgspec

from jobs.query.cursor import chunk_after, walk
from jobs.query.listing import state_index
from jobs.records import errors_or_none, spec_or_none
from jobs.store.broker import Broker
from jobs.store.connection import translated


class DeadGroup(msgspec.Struct, kw_only=True):
    function: str
    error_type: str
    count: int
    last_at: float  # when the newest of the group died
    message: str  # the newest one's error message


class DeadGroups(msgspec.Struct, kw_only=True):
    groups: list[DeadGroup]  # largest first
    scanned: int
    complete: bool  # False: only the newest ``scanned`` dead jobs were read


def dead_groups(broker: Broker, queue: str, *, scan: int = 100_000) -> DeadGroups:
    """Group the newest ``scan`` dead jobs of ``queue`` (reading three fields of each)."""
    index = state_index(broker, queue, "dead")
    groups: dict[tuple[str, str], DeadGroup] = {}
    scanned = 0
    for chunk in walk(broker, index, newest_first=True, size=1000):
        with translated(broker.url):
            pipe = broker.client.pipeline(transaction=False)
            for p in chunk:
                pipe.hmget(broker.keys.job(p.member), "spec", "errs")
            rows = pipe.execute()
        for position, (spec_raw, errs_raw) in zip(chunk, rows, strict=True):
            if spec_raw is None:
                continue  # deleted meanwhile
            spec = spec_or_none(spec_raw)
            errors = errors_or_none(errs_raw)
            last = errors[-1] if errors else None
            key = (spec.function if spec else "(unreadable)", last.type if last else "")
            group = groups.get(key)
            if group is None:
                groups[key] = DeadGroup(function=key[0], error_type=key[1], count=1,
                                        last_at=position.score / 1000.0,
                                        message=last.message if last else "")
            else:
                group.count += 1
        scanned += len(chunk)
        if scanned >= scan:
            more = bool(chunk_after(broker, index, chunk[-1], newest_first=True, size=1))
            return DeadGroups(groups=_ordered(groups), scanned=scanned, complete=not more)
    return DeadGroups(groups=_ordered(groups), scanned=scanned, complete=True)


def _ordered(groups: dict[tuple[str, str], DeadGroup]) -> list[DeadGroup]:
    return sorted(groups.values(), key=lambda g: (-g.count, g.function, g.error_type))
