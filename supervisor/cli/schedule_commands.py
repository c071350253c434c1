"""``jobvisor schedules``: every cron schedule, its next fire times and its last run."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from jobs import Broker
from jobs.firing import State, read_states, server_clock
from jobs.priority import parse_priority
from jobs.schedules import Schedule, list_schedules, next_ticks
from supervisor.cli.common import broker_for, load, output


def schedule_rows(config: list[Schedule], broker: Broker, count: int) -> list[dict[str, Any]]:
    """Config schedules, then API ones; an API one a config one shadows is marked so."""
    api = list_schedules(broker)
    taken = {s.name for s in config}
    listed = [(s, "config") for s in config]
    listed += [(s, "api (shadowed by config)" if s.name in taken else "api") for s in api]
    now = server_clock(broker)()
    states = read_states(broker, [s.name for s, _ in listed])
    return [_row(s, source, states[s.name], now, count, broker) for s, source in listed]


def _row(s: Schedule, source: str, state: State, now: float, count: int,
         broker: Broker) -> dict[str, Any]:
    last = None
    if state.job_id and state.tick is not None:
        outcome = broker.jobs.state_of(state.job_id) or "expired"
        if not state.sent:
            outcome = f"{outcome} (enqueue not confirmed yet)"
        last = {"job_id": state.job_id, "tick": _iso(state.tick, s), "state": outcome,
                "fired_by": state.fired_by}
    return {"name": s.name, "source": source, "enabled": s.enabled, "cron": s.cron,
            "timezone": s.timezone or "UTC", "job": s.job, "args": s.args,
            "kwargs": s.kwargs, "queue": s.queue or broker.defaults.queue,
            "priority": parse_priority(s.priority), "jitter": s.jitter,
            "misfire": s.misfire, "misfire_grace": s.misfire_grace,
            "next": [_iso(t, s) for t in next_ticks(s, now, count)] if s.enabled else [],
            "last": last}


def _iso(tick: int, s: Schedule) -> str:
    return datetime.fromtimestamp(tick, s.zone).isoformat()


def _text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no schedules: add [[schedules]] to config.toml or use jobs.schedules.add()"
    blocks = []
    for r in rows:
        misfire = r["misfire"] + (f" within {r['misfire_grace']:g}s"
                                  if r["misfire"] == "run_once" else "")
        last = r["last"]
        lines = [
            f"{r['name']}  [{r['source']}{'' if r['enabled'] else ', disabled'}]",
            f"  cron      {r['cron']}  ({r['timezone']}, misfire {misfire}, "
            f"jitter {r['jitter']:g}s)",
            f"  job       {r['job']}({_call_args(r)}) -> queue {r['queue']}, "
            f"priority {r['priority']}",
            f"  next      {', '.join(r['next']) or '-'}",
            "  last run  " + (f"{last['job_id']} at {last['tick']}: {last['state']}"
                              f" (fired by {last['fired_by'].rpartition(':')[0]})"
                              if last else "never"),
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _call_args(r: dict[str, Any]) -> str:
    parts = [repr(a) for a in r["args"]] + [f"{k}={v!r}" for k, v in r["kwargs"].items()]
    return ", ".join(parts)


def cmd_schedules(args: argparse.Namespace) -> int:
    config, _ = load(args)
    broker = broker_for(config)
    count = max(0, min(args.next, 100))
    output(args, schedule_rows(config.schedules, broker, count), _text)
    return 0
