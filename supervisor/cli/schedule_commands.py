"""``jobvisor schedules``: every cron schedule, its next fire times and its last run; and
``schedules pause|resume|trigger NAME`` to steer one on every supervisor."""

from __future__ import annotations

import argparse
from typing import Any

from jobs.errors import ConfigurationError
from jobs.query.schedules import schedule_rows
from jobs.schedule_control import pause_schedule, resume_schedule, trigger_schedule
from supervisor.cli.common import broker_for, load, output


def _text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no schedules: add [[schedules]] to config.toml or use jobs.schedules.add()"
    blocks = []
    for r in rows:
        misfire = r["misfire"] + (f" within {r['misfire_grace']:g}s"
                                  if r["misfire"] == "run_once" else "")
        last = r["last"]
        flags = ("" if r["enabled"] else ", disabled") + (
            f", paused since {r['paused_at'][:19]}" if r["paused"] else "")
        lines = [
            f"{r['name']}  [{r['source']}{flags}]",
            f"  cron      {r['cron']}  ({r['timezone']}, misfire {misfire}, "
            f"jitter {r['jitter']:g}s)",
            f"  job       {r['job']}({_call_args(r)}) -> queue {r['queue']}, "
            f"priority {r['priority']}",
            f"  next      {', '.join(r['next']) or ('paused' if r['paused'] else '-')}",
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
    if args.action == "list":
        output(args, schedule_rows(broker, config.schedules, args.next), _text)
        return 0
    if not args.name:
        raise ConfigurationError(f"schedules {args.action} needs a schedule name (see "
                                 "`jobvisor schedules`)")
    steer = {"pause": pause_schedule, "resume": resume_schedule}.get(args.action)
    if steer is not None:
        changed = steer(args.name, broker, config=config.schedules, who="cli")
        said = {("pause", True): "paused on every supervisor",
                ("pause", False): "already paused",
                ("resume", True): "resumed: it fires from its next tick on",
                ("resume", False): "not paused"}[args.action, changed]
        output(args, {"name": args.name, f"{args.action}d": changed},
               lambda _: f"schedule {args.name}: {said}")
        return 0
    job_id = trigger_schedule(args.name, broker, config=config.schedules, who="cli")
    output(args, {"name": args.name, "job_id": job_id},
           lambda _: f"schedule {args.name}: enqueued job {job_id}")
    return 0
