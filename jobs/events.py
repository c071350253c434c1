"""Reading the events stream: what happened to jobs and workers, in order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jobs.store.broker import Broker, default_broker
from jobs.store.connection import translated


def _decode(entry_id: bytes, fields: dict[bytes, bytes]) -> list[dict[str, Any]]:
    """The events of one stream entry: one, or two when a worker's completion of a job
    and its start of the next were written together (the first as ``p.*`` fields)."""
    event_id = entry_id.decode()
    when = int(event_id.split("-", 1)[0]) / 1000.0
    event: dict[str, Any] = {"event_id": event_id}
    earlier: dict[str, Any] = {}
    for k, v in fields.items():
        name, value = k.decode(), v.decode("utf-8", "replace")
        if name.startswith("p."):
            earlier[name[2:]] = value
        else:
            event[name] = value
    event["time"] = when
    if not earlier:
        return [event]
    return [{"event_id": event_id, **earlier, "time": when}, event]


def _wanted(event: dict[str, Any], queue: str | None, job: str | None) -> bool:
    return (queue is None or event.get("q") == queue) and (job is None or event.get("id") == job)


def recent_events(broker: Broker | None = None, count: int = 50, queue: str | None = None,
                  job: str | None = None) -> list[dict[str, Any]]:
    """The latest ``count`` matching events, oldest first."""
    b = broker or default_broker()
    out: list[dict[str, Any]] = []
    last = "+"
    with translated(b.url):
        while len(out) < count:
            page = b.client.xrevrange(b.keys.events(), max=last, count=500)
            if not page:
                break
            for entry_id, fields in page:
                for event in reversed(_decode(entry_id, fields)):  # page is newest first
                    if _wanted(event, queue, job):
                        out.append(event)
            last = f"({page[-1][0].decode()}"
    return list(reversed(out[:count]))


def follow(broker: Broker | None = None, since: str = "$", queue: str | None = None,
           job: str | None = None, block: float = 1.0) -> Iterator[dict[str, Any] | None]:
    """Yield events as they are appended (blocking on Redis); None after an idle ``block``."""
    b = broker or default_broker()
    last = since
    wait_ms = int(min(block, b.settings.socket_timeout * 0.6) * 1000)
    while True:
        with translated(b.url):
            reply = b.client.xread({b.keys.events(): last}, block=wait_ms, count=500)
        if not reply:
            yield None
            continue
        for entry_id, fields in reply[0][1]:
            last = entry_id.decode()
            for event in _decode(entry_id, fields):
                if _wanted(event, queue, job):
                    yield event
