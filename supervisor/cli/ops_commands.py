"""CLI commands for operators: stats, hosts, workers, dead letters, pause, scale, events,
health."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

from jobs import Broker, Job, JobState, Queue
from jobs.cluster import (
    DEFAULT_POOL,
    paused,
    pools_of,
    served_queues,
    supervisors,
    unserved_warning,
)
from jobs.effective import published_functions
from jobs.errors import ConfigurationError
from jobs.events import follow, recent_events
from jobs.health import Health, as_dict, check_health
from jobs.query import JobFilter, act_on, act_on_matching, iso, job_view
from jobs.stats import as_dict as stats_dict
from jobs.stats import function_stats, queue_stats
from jobs.steering import reload_supervisor, scale_pool, steer_pool, steer_queue
from supervisor.cli.common import (
    actor,
    ago,
    broker_for,
    connect,
    did_you_mean,
    duration,
    load,
    local_ident,
    local_pid,
    output,
    table,
)
from supervisor.cli.query_commands import cmd_dead_groups
from supervisor.errors import ExitCode
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


def _function_stats_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no outcomes in the last hour"
    return table([[r["function"], r["last_minute"]["completed"],
                   r["last_minute"]["retried"] + r["last_minute"]["dead"],
                   r["last_hour"]["completed"], r["last_hour"]["retried"] + r["last_hour"]["dead"],
                   duration(r["avg_seconds"])] for r in rows],
                 ["FUNCTION", "DONE/1M", "FAILED/1M", "DONE/1H", "FAILED/1H", "AVG TIME/1H"])


def cmd_stats(args: argparse.Namespace) -> int:
    broker = connect(args)
    if args.functions:
        output(args, [stats_dict(s) for s in function_stats(broker)], _function_stats_text)
        return 0
    served = served_queues(broker)
    rows = [{**stats_dict(s), "served": s.queue in served} for s in queue_stats(broker)]
    output(args, rows, _stats_text)
    if not args.json:
        functions = [stats_dict(s) for s in function_stats(broker)]
        if functions:
            print(f"\n{_function_stats_text(functions)}")
    for r in rows:
        if not r["served"] and (r["queued"] or r["scheduled"] or r["waiting"]):
            print(unserved_warning(r["queue"], broker), file=sys.stderr)
    return 0


def _pools_text(pools: list[dict[str, Any]]) -> str:
    """``default 1/2, reports 0/1 paused``: busy of running workers per pool."""
    return ", ".join(f"{p['name']} {p['busy']}/{p['workers']}" + (" paused" if p["paused"] else "")
                     + (f" (target {p['target']})" if p["target"] != p["workers"] else "")
                     for p in pools)


def cmd_hosts(args: argparse.Namespace) -> int:
    entries = supervisors(connect(args))
    rows = [{"id": e["id"], "host": e["host"], "pid": e["pid"], "started": iso(e["started"]),
             "config_version": e["config_version"], "queues": e["queues"],
             "workers": len(e["workers"]),
             "busy": sum(1 for w in e["workers"] if w["state"] == "busy"),
             "pools": pools_of(e)} for e in entries]
    output(args, rows, lambda rows: table(
        [[r["id"], r["started"], r["config_version"], ",".join(r["queues"]),
          f"{r['busy']}/{r['workers']}", _pools_text(r["pools"])] for r in rows],
        ["SUPERVISOR", "STARTED", "CONFIG", "QUEUES", "BUSY", "POOLS"])
        if rows else "no live supervisors")
    return 0


def _workers_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no live workers"
    text = table(
        [[r["supervisor"], r["pool"], r["pid"], r["state"], r.get("health", "-"),
          r["function"] or "-", r["job"] or "-",
          duration(r["elapsed"]) if r["state"] == "busy" else "-",
          f"{r['rss'] / 2**20:.0f}MiB", r["jobs_done"], r.get("jobs_failed", "-"),
          duration(r["uptime"]) if "uptime" in r else "-"] for r in rows],
        ["SUPERVISOR", "POOL", "PID", "STATE", "HEALTH", "FUNCTION", "JOB", "ELAPSED", "RSS",
         "DONE", "FAILED", "UP"])
    # Why each worker that is not ok is flagged, under the table.
    why = [f"{r['pid']}: {r['health']}: {r['health_reason']}" for r in rows
           if r.get("health_reason")]
    return "\n".join([text, *why])


def cmd_workers(args: argparse.Namespace) -> int:
    rows = [{"supervisor": e["id"], "pool": DEFAULT_POOL, **w}
            for e in supervisors(connect(args)) for w in e["workers"]]
    output(args, rows, _workers_text)
    return 0


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in (("function", args.function), ("error_type", args.error_type),
                              ("older_than", args.older_than), ("newer_than", args.newer_than))
            if v is not None}


def _dead_list(args: argparse.Namespace, broker: Broker) -> int:
    published = published_functions(broker)
    records = Queue(args.queue, broker).dead(limit=args.limit, **_filters(args))
    rows = [job_view(r, broker, published=published) for r in records]
    output(args, rows, lambda rows: table(
        [[r["id"], r["function"], f"{r['attempts']}/{r['max_attempts']}",
          (r["error"] or {}).get("type", "-"),
          ((r["error"] or {}).get("message") or "")[:60], ago(rec.finished_at)]
         for r, rec in zip(rows, records, strict=True)],
        ["ID", "FUNCTION", "ATTEMPTS", "ERROR", "MESSAGE", "DIED"])
        if rows else f"no dead jobs in {args.queue}")
    return 0


def _not_dead(args: argparse.Namespace, broker: Broker) -> str | None:
    """Why ``dead requeue|purge ID`` cannot act on that job, if it cannot."""
    record = Job.fetch(args.id, broker).record  # JobNotFound when there is no such job
    if record.queue != args.queue:
        return (f"job {args.id} is not on queue {args.queue!r} but on {record.queue!r}: "
                f"add --queue {record.queue}")
    if record.state is not JobState.DEAD:
        return (f"job {args.id} is {record.state}, not dead: nothing to {args.action} (see "
                f"`jobvisor show {args.id}`)")
    return None


def _dead_act(args: argparse.Namespace, broker: Broker) -> int:
    """Requeue or purge one dead job or all a filter matches, as ``jobs.query`` does for
    every surface (and with who asked, for the audit trail)."""
    if not (args.id or _filters(args) or args.all):
        raise ConfigurationError(
            f"dead {args.action} needs a job id, a filter (--function, --error-type, "
            "--older-than, --newer-than) or --all"
        )
    action = "requeue" if args.action == "requeue" else "delete"
    if args.id:
        refusal = _not_dead(args, broker)
        if refusal:
            raise ConfigurationError(refusal)
        n = act_on(broker, args.queue, [args.id], action, who=actor()).done
        if n == 0:  # it left the dead letters meanwhile
            raise ConfigurationError(_not_dead(args, broker) or f"job {args.id}: not dead")
    else:
        n = act_on_matching(broker, args.queue, "dead", action,
                            where=JobFilter(**_filters(args)), who=actor()).done
    verb = "requeued" if args.action == "requeue" else "purged"
    output(args, {verb: n}, lambda d: f"{verb} {n} dead job(s) of {args.queue}")
    return 0


def cmd_dead(args: argparse.Namespace) -> int:
    broker = connect(args)
    args.queue = args.queue or broker.defaults.queue
    if args.action == "list":
        return _dead_list(args, broker)
    if args.action == "groups":
        if args.id or _filters(args):
            raise ConfigurationError("dead groups takes no job id and no filter: it groups "
                                     "every dead job of --queue")
        return cmd_dead_groups(args)
    if args.action == "show":
        if not args.id:
            raise ConfigurationError("dead show needs a job id")
        from supervisor.cli.job_commands import cmd_show

        return cmd_show(args)
    return _dead_act(args, broker)


def cmd_pause(args: argparse.Namespace) -> int:
    broker = connect(args)
    known = set(broker.jobs.known_queues()) | served_queues(broker)
    if args.command == "resume":
        if args.queue not in paused(broker):
            raise ConfigurationError(f"queue {args.queue!r} is not paused: nothing to resume")
        print(steer_queue(args.queue, paused=False, who=actor(), broker=broker).message)
        return 0
    if args.queue not in known and not args.new:
        raise ConfigurationError(
            f"queue {args.queue!r} does not exist: no job was ever enqueued to it and no live "
            f"supervisor serves it{did_you_mean(args.queue, known)}; to pause it before its "
            "first job on purpose, add --new")
    said = steer_queue(args.queue, paused=True, who=actor(), broker=broker).message
    print(said + ("" if args.queue in known else
                  " (a new queue: it starts paused when jobs arrive)"))
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    config, _ = load(args)
    ident = args.host or local_ident(config)
    print(scale_pool(ident, args.workers, pool=args.pool, pool_max=POOL_MAX, who=actor(),
                     broker=broker_for(config)).message)
    return 0


def cmd_pool(args: argparse.Namespace) -> int:
    config, _ = load(args)
    ident = args.host or local_ident(config)
    done = steer_pool(ident, args.name, paused=args.action == "pause", who=actor(),
                      broker=broker_for(config))
    was = "paused" if done.pool.get("paused") else "running"
    print(f"{done.message} (it was {was}, {done.pool['workers']} workers)")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    config, _ = load(args)
    if args.host:
        print(reload_supervisor(args.host, who=actor(), broker=broker_for(config)).message)
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


def _health_text(health: Health) -> str:
    width = max(len(c.name) for c in health.checks)
    return "\n".join(f"{'ok' if c.ok else 'FAIL':<4}  {c.name:<{width}}  {c.detail}"
                     for c in health.checks)


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when every check passed, 4 when Redis did not answer, 1 when another failed."""
    config, _ = load(args)
    settings = config.health
    health = check_health(
        broker_for(config),
        max_lag=settings.max_lag if args.max_lag is None else args.max_lag,
        max_dead=settings.max_dead if args.max_dead is None else args.max_dead,
        redis_timeout=settings.redis_timeout)
    output(args, as_dict(health), lambda _: _health_text(health))
    if health.ok:
        return int(ExitCode.OK)
    redis_down = any(c.name == "redis" and not c.ok for c in health.checks)
    return int(ExitCode.REDIS_UNAVAILABLE if redis_down else ExitCode.ERROR)
