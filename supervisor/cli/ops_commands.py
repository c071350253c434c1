"""CLI commands for operators: stats, hosts, workers, dead letters, pause, scale, events."""

from __future__ import annotations

import argparse
import difflib
import os
import signal
import sys
import time
from typing import Any

from jobs import Job, Queue
from jobs.cluster import (
    Reload,
    Scale,
    pause,
    paused,
    resume,
    send_control,
    served_queues,
    supervisor_entry,
    supervisors,
    unserved_warning,
)
from jobs.effective import published_functions
from jobs.errors import ConfigurationError
from jobs.events import follow, recent_events
from jobs.stats import as_dict, queue_stats
from supervisor.cli.common import (
    ago,
    broker_for,
    connect,
    duration,
    iso,
    load,
    local_ident,
    local_pid,
    output,
    table,
)
from supervisor.cli.job_commands import job_dict
from supervisor.runtime.scaling import POOL_MAX


def _stats_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no queues yet"
    return table([[r["queue"] + (" (paused)" if r["paused"] else ""), r["queued"],
                   r["scheduled"], r["active"], r["waiting"], r["dead"],
                   r["last_minute"]["completed"], r["last_minute"]["retried"] +
                   r["last_minute"]["dead"], r["last_hour"]["completed"],
                   r["last_hour"]["retried"] + r["last_hour"]["dead"],
                   f"{r['throughput']:.1f}/s", duration(r["oldest_queued_age"])]
                  for r in rows],
                 ["QUEUE", "QUEUED", "SCHEDULED", "ACTIVE", "WAITING", "DEAD", "DONE/1M",
                  "FAILED/1M", "DONE/1H", "FAILED/1H", "THROUGHPUT", "OLDEST"])


def cmd_stats(args: argparse.Namespace) -> int:
    broker = connect(args)
    served = served_queues(broker)
    rows = [{**as_dict(s), "served": s.queue in served} for s in queue_stats(broker)]
    output(args, rows, _stats_text)
    for r in rows:
        if not r["served"] and (r["queued"] or r["scheduled"] or r["waiting"]):
            print(unserved_warning(r["queue"], broker), file=sys.stderr)
    return 0


def cmd_hosts(args: argparse.Namespace) -> int:
    entries = supervisors(connect(args))
    rows = [{"id": e["id"], "host": e["host"], "pid": e["pid"], "started": iso(e["started"]),
             "config_version": e["config_version"], "queues": e["queues"],
             "workers": len(e["workers"]),
             "busy": sum(1 for w in e["workers"] if w["state"] == "busy")} for e in entries]
    output(args, rows, lambda rows: table(
        [[r["id"], r["started"], r["config_version"], ",".join(r["queues"]),
          f"{r['busy']}/{r['workers']}"] for r in rows],
        ["SUPERVISOR", "STARTED", "CONFIG", "QUEUES", "BUSY"]) if rows else "no live supervisors")
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    rows = [{"supervisor": e["id"], **w} for e in supervisors(connect(args)) for w in e["workers"]]
    output(args, rows, lambda rows: table(
        [[r["supervisor"], r["pid"], r["state"], r["function"] or "-", r["job"] or "-",
          duration(r["elapsed"]) if r["state"] == "busy" else "-",
          f"{r['rss'] / 2**20:.0f}MiB", r["jobs_done"]] for r in rows],
        ["SUPERVISOR", "PID", "STATE", "FUNCTION", "JOB", "ELAPSED", "RSS", "DONE"])
        if rows else "no live workers")
    return 0


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in (("function", args.function), ("error_type", args.error_type),
                              ("older_than", args.older_than), ("newer_than", args.newer_than))
            if v is not None}


def cmd_dead(args: argparse.Namespace) -> int:
    broker = connect(args)
    q = Queue(args.queue, broker)
    if args.action == "list":
        published = published_functions(broker)
        records = q.dead(limit=args.limit, **_filters(args))
        rows = [job_dict(r, broker, published=published) for r in records]
        output(args, rows, lambda rows: table(
            [[r["id"], r["function"], f"{r['attempts']}/{r['max_attempts']}",
              (r["error"] or {}).get("type", "-"),
              ((r["error"] or {}).get("message") or "")[:60], ago(rec.finished_at)]
             for r, rec in zip(rows, records, strict=True)],
            ["ID", "FUNCTION", "ATTEMPTS", "ERROR", "MESSAGE", "DIED"])
            if rows else f"no dead jobs in {args.queue}")
        return 0
    if args.action == "show":
        if not args.id:
            raise ConfigurationError("dead show needs a job id")
        from supervisor.cli.job_commands import cmd_show

        return cmd_show(args)
    if not (args.id or _filters(args) or args.all):
        raise ConfigurationError(
            f"dead {args.action} needs a job id, a filter (--function, --error-type, "
            "--older-than, --newer-than) or --all"
        )
    act = q.requeue_dead if args.action == "requeue" else q.purge_dead
    n = act(args.id, **_filters(args)) if args.id else act(**_filters(args))
    verb = "requeued" if args.action == "requeue" else "purged"
    if args.id and n == 0:
        state = Job.fetch(args.id, broker).state  # JobNotFound when there is no such job
        raise ConfigurationError(
            f"job {args.id} is {state}, not dead: nothing to {args.action} (see "
            f"`jobvisor show {args.id}`)")
    output(args, {verb: n}, lambda d: f"{verb} {n} dead job(s) of {args.queue}")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    broker = connect(args)
    known = set(broker.jobs.known_queues()) | served_queues(broker)
    if args.command == "resume":
        if args.queue not in paused(broker):
            raise ConfigurationError(f"queue {args.queue!r} is not paused: nothing to resume")
        resume(args.queue, broker)
        print(f"resumed {args.queue}")
        return 0
    if args.queue not in known and not args.new:
        near = difflib.get_close_matches(args.queue, known, n=1)
        raise ConfigurationError(
            f"queue {args.queue!r} does not exist: no job was ever enqueued to it and no live "
            f"supervisor serves it{f' (did you mean {near[0]!r}?)' if near else ''}; to pause "
            "it before its first job on purpose, add --new")
    pause(args.queue, broker)
    print(f"paused {args.queue}" + ("" if args.queue in known else
                                    " (a new queue: it starts paused when jobs arrive)"))
    return 0


def _scale_refusal(ident: str, workers: int, entry: dict[str, Any]) -> str | None:
    """Why ``scale workers`` cannot be done by the supervisor of ``entry``, if it cannot."""
    most = entry.get("max_workers")  # absent from a supervisor of an older version
    if most is None or workers <= most:
        return None
    if entry.get("max_workers_configured"):
        how = "raise supervisor.max_workers in its config.toml and reload it"
    else:
        how = "set supervisor.max_workers in its config.toml and reload it to allow more"
    return (f"scale {workers} refused: {ident} runs at most {most} workers "
            f"({entry.get('max_workers_from', 'supervisor.max_workers')}); {how} "
            f"(up to {POOL_MAX})")


def cmd_scale(args: argparse.Namespace) -> int:
    config, _ = load(args)
    if args.workers < 1:
        raise ConfigurationError("scale needs at least 1 worker")
    broker = broker_for(config)
    ident = args.host or local_ident(config)
    entry = supervisor_entry(ident, broker)
    if entry is None:
        raise ConfigurationError(
            f"supervisor {ident} is not live: it has no entry in Redis (a running supervisor "
            "renews its entry every second); see `jobvisor hosts` for the live ones")
    refusal = _scale_refusal(ident, args.workers, entry)
    if refusal:
        raise ConfigurationError(refusal)
    send_control(ident, Scale(workers=args.workers), broker)
    print(f"asked {ident} to run {args.workers} workers (now {len(entry['workers'])})")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    config, _ = load(args)
    if args.host:
        send_control(args.host, Reload(), broker_for(config))
        print(f"asked {args.host} to reload")
    else:
        pid = local_pid(config)
        os.kill(pid, signal.SIGHUP)
        print(f"sent SIGHUP to supervisor {pid}")
    return 0


def _event_text(e: dict[str, Any]) -> str:
    when = e["time"]
    extra = " ".join(f"{k}={v}" for k, v in e.items()
                     if k not in ("event_id", "time", "e", "id", "q"))
    return f"{when} {e['e']:<14} {e.get('q', '-'):<10} {e.get('id', '-'):<18} {extra}".rstrip()


def _with_iso_time(e: dict[str, Any]) -> dict[str, Any]:
    return {**e, "time": iso(e["time"])}


def cmd_events(args: argparse.Namespace) -> int:
    broker = connect(args)
    for e in recent_events(broker, args.count, args.queue, args.job):
        output(args, _with_iso_time(e), _event_text)
    if not args.follow:
        return 0
    deadline = None if args.for_seconds is None else time.monotonic() + args.for_seconds
    for item in follow(broker, queue=args.queue, job=args.job):
        if item is not None:
            output(args, _with_iso_time(item), _event_text)
            sys.stdout.flush()
        if deadline is not None and time.monotonic() >= deadline:
            break
    return 0
