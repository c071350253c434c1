"""Every cron schedule as the CLI, the dashboard and the API show it: definition, source,
next fire times, last fire and whether it is paused."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jobs.firing import State, read_states, server_clock
from jobs.priority import parse_priority
from jobs.query.views import iso
from jobs.schedule_control import Listed, every_schedule
from jobs.schedules import Schedule, next_ticks
from jobs.store.broker import Broker

MAX_NEXT = 100


def schedule_rows(broker: Broker, config: Sequence[Schedule] = (),
                  count: int = 3) -> list[dict[str, Any]]:
    """Config schedules (``config``: this process's, plus those live supervisors publish),
    then API ones; ``count`` next fire times each (none while disabled or paused)."""
    listed = every_schedule(broker, config)
    states = read_states(broker, [x.schedule.name for x in listed])
    now = server_clock(broker)() if listed else 0.0
    count = max(0, min(count, MAX_NEXT))
    return [_row(x, states[x.schedule.name], now, count, broker) for x in listed]


def _row(listed: Listed, state: State, now: float, count: int,
         broker: Broker) -> dict[str, Any]:
    s = listed.schedule
    last = None
    if state.job_id and state.tick is not None:
        outcome = broker.jobs.state_of(state.job_id) or "expired"
        if not state.sent:
            outcome = f"{outcome} (enqueue not confirmed yet)"
        last = {"job_id": state.job_id, "tick": _iso(state.tick, s), "state": outcome,
                "fired_by": state.fired_by}
    firing = s.enabled and state.paused_at is None
    return {"name": s.name, "source": listed.source, "enabled": s.enabled,
            "paused": state.paused_at is not None, "paused_at": iso(state.paused_at),
            "cron": s.cron, "timezone": s.timezone or "UTC", "job": s.job, "args": s.args,
            "kwargs": s.kwargs, "queue": s.queue or broker.defaults.queue,
            "priority": parse_priority(s.priority),
            "jitter": s.jitter, "misfire": s.misfire, "misfire_grace": s.misfire_grace,
            "next": [_iso(t, s) for t in next_ticks(s, now, count)] if firing else [],
            "last": last}


def _iso(tick: int, s: Schedule) -> str:
    return datetime.fromtimestamp(tick, s.zone).isoformat()
