"""Dead letters grouped by function and error type: what broke, how often, lately."""

from __future__ import annotations

import msgspec

from jobs.errors import ConfigurationError
from jobs.query.cursor import Position, chunk_after
from jobs.query.listing import state_index
from jobs.records import errors_or_none, spec_or_none
from jobs.store.broker import Broker
from jobs.store.connection import translated

DEFAULT_SCAN = 10_000
MAX_SCAN = 1_000_000


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


def dead_groups(broker: Broker, queue: str, *, scan: int = DEFAULT_SCAN) -> DeadGroups:
    """Group the newest ``scan`` dead jobs of ``queue`` (reading two fields of each).

    Reading costs about 20 microseconds a job, so the default keeps a page that refreshes
    itself quick; a larger ``scan`` groups further back.
    """
    if not 1 <= scan <= MAX_SCAN:
        raise ConfigurationError(f"scan must be 1 to {MAX_SCAN:,}, not {scan}")
    index = state_index(broker, queue, "dead")
    groups: dict[tuple[str, str], DeadGroup] = {}
    scanned = 0
    after: Position | None = None
    while scanned < scan:
        chunk = chunk_after(broker, index, after, True, min(1000, scan - scanned))
        if not chunk:
            return DeadGroups(groups=_ordered(groups), scanned=scanned, complete=True)
        _count(broker, chunk, groups)
        scanned += len(chunk)
        after = chunk[-1]
    more = bool(chunk_after(broker, index, after, newest_first=True, size=1))
    return DeadGroups(groups=_ordered(groups), scanned=scanned, complete=not more)


def _count(broker: Broker, chunk: list[Position], groups: dict[tuple[str, str], DeadGroup],
           ) -> None:
    """Add the jobs of ``chunk`` (newest first) to their groups (one pipeline)."""
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


def _ordered(groups: dict[tuple[str, str], DeadGroup]) -> list[DeadGroup]:
    return sorted(groups.values(), key=lambda g: (-g.count, g.function, g.error_type))
