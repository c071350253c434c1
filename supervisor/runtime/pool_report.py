"""Reading the children's shared-memory slots into the views others need: the jobs
to renew, the registry entry, the status line, worker counts by state."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol

import psutil

from supervisor.runtime.duties import Held
from supervisor.runtime.slots import ChildState, Slots


class HasSlot(Protocol):
    pid: int
    slot: int


def held(children: Iterable[HasSlot], slots: Slots) -> list[Held]:
    out = []
    for c in list(children):
        v = slots.read(c.slot)
        if v.state is ChildState.BUSY and v.job_id:
            out.append(Held(v.job_id, v.queue, v.token))
    return out


def worker_views(children: Iterable[HasSlot], slots: Slots) -> list[dict[str, Any]]:
    now = time.monotonic()
    out = []
    for c in list(children):
        v = slots.read(c.slot)
        try:
            rss = psutil.Process(c.pid).memory_info().rss
        except psutil.Error:
            rss = 0
        busy = v.state is ChildState.BUSY
        out.append({"pid": c.pid, "state": v.state.name.lower(), "job": v.job_id,
                    "function": v.function, "elapsed": round(now - v.started, 3) if busy else 0.0,
                    "jobs_done": v.jobs_done, "rss": rss})
    return out


def worker_states(children: Iterable[HasSlot], slots: Slots) -> Counter[str]:
    return Counter(slots.read(c.slot).state.name.lower() for c in list(children))


def status_line(children: Iterable[HasSlot], slots: Slots, queues: list[str]) -> str:
    views = [slots.read(c.slot) for c in list(children)]
    busy = sum(1 for v in views if v.state is ChildState.BUSY)
    return f"{busy}/{len(views)} busy [{','.join(queues)}]"
