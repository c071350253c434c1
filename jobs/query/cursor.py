"""Walking a state index (a sorted set) in order from a position, a chunk at a time.

A position is the (score, id) of the last item seen. Sorted sets order by score, then
by member, so "after this position" is exact even when many jobs share a score, and
stays right while jobs enter and leave the index between pages (a rank would shift).
The cursor handed to users is that position, encoded, with the name of the index part it
is in when a state spans several sorted sets (queued jobs a limit holds back); a page
never holds a server-side snapshot, so the millionth page costs what the first does.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import NamedTuple

from jobs.errors import ConfigurationError
from jobs.store.broker import Broker
from jobs.store.connection import translated


class Position(NamedTuple):
    score: float
    member: str


def encode(position: Position, part: str = "") -> str:
    """``part`` names the sorted set the position is in ("": the state's own index)."""
    raw = f"{position.score!r} {position.member}" + (f" {part}" if part else "")
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(cursor: str) -> tuple[Position, str]:
    """The position a cursor names and its part, or an error that says to start from the
    first page."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, member, *part = raw.split(" ", 2)
        value = float(score)
        if not member or value != value:
            raise ValueError
        return Position(value, member), part[0] if part else ""
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ConfigurationError(
            f"cursor {cursor!r} is not one this server gave out: leave it out to start "
            "from the first page"
        ) from None


def _beyond(item: Position, mark: Position, newest_first: bool) -> bool:
    """Whether a walk in this order meets ``item`` after ``mark``."""
    if newest_first:
        return (item.score, item.member) < (mark.score, mark.member)
    return (item.score, item.member) > (mark.score, mark.member)


def chunk_after(broker: Broker, index: str, after: Position | None, newest_first: bool,
                size: int) -> list[Position]:
    """Up to ``size`` items of ``index`` that follow ``after`` in the walk's order."""
    client = broker.client
    with translated(broker.url):
        if after is None:
            raw = client.zrange(index, 0, size - 1, desc=newest_first, withscores=True)
            return [Position(score, member.decode()) for member, score in raw]
        start = repr(after.score)  # inclusive: ties are skipped below
        end = "-inf" if newest_first else "+inf"
        offset = 0
        while True:  # skips only the items sharing ``after``'s score up to it
            raw = client.zrange(index, start, end, desc=newest_first, byscore=True,
                                offset=offset, num=size, withscores=True)
            items = [Position(score, member.decode()) for member, score in raw]
            kept = [i for i in items if _beyond(i, after, newest_first)]
            if kept or len(items) < size:
                return kept
            offset += size


def walk(broker: Broker, index: str, after: Position | None = None, newest_first: bool = True,
         size: int = 500, stop: Position | None = None) -> Iterator[list[Position]]:
    """Chunks of ``index`` in order from ``after``; with ``stop``, none beyond it."""
    while True:
        items = chunk_after(broker, index, after, newest_first, size)
        if stop is not None:
            items = [i for i in items if not _beyond(i, stop, newest_first)]
        if not items:
            return
        yield items
        after = items[-1]


def last_position(broker: Broker, index: str, newest_first: bool) -> Position | None:
    """The item a walk in this order reaches last right now (to not chase newcomers)."""
    with translated(broker.url):
        raw = broker.client.zrange(index, 0, 0, desc=not newest_first, withscores=True)
    return Position(raw[0][1], raw[0][0].decode()) if raw else None
