"""``jobvisor``: one command line for running and operating jobvisor."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jobs
from jobs import JobsError
from jobs.query import LISTED_STATES
from jobs.query.groups import DEFAULT_SCAN as DEFAULT_GROUP_SCAN
from jobs.query.groups import MAX_SCAN as MAX_GROUP_SCAN
from supervisor.cli import (
    encryption_commands,
    function_commands,
    job_commands,
    ops_commands,
    query_commands,
    schedule_commands,
)
from supervisor.cli.common import load
from supervisor.errors import ConfigError, ExitCode, HaltServer
from supervisor.integrations.logs import configure
from supervisor.job_control import JOB_CONTROL


def cmd_run(args: argparse.Namespace) -> int:
    from supervisor.integrations.embedded import EmbeddedServer
    from supervisor.runtime.arbiter import Arbiter

    if args.log_file and not Path(args.log_file).parent.is_dir():
        raise ConfigError(f"--log-file {args.log_file}: its directory does not exist")
    reopen = configure(args.log_level, args.log_format, args.log_file)
    config, path = load(args)
    data_dir = Path(config.supervisor.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    url = config.redis.url or os.environ.get("JOBVISOR_REDIS_URL", "")
    embedded = None
    if not url:
        embedded = EmbeddedServer(data_dir)
        embedded.start()
        url = embedded.url
    pidfile = data_dir / "jobvisor.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    try:
        return Arbiter(config, path, url, embedded, reopen).run()
    finally:
        if embedded is not None:
            embedded.stop()
        pidfile.unlink(missing_ok=True)


def cmd_demo(args: argparse.Namespace) -> int:
    from supervisor.cli.demo import run_demo

    return run_demo(args)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from supervisor.cli.dashboard import cmd_dashboard as dashboard

    return dashboard(args)


def cmd_top(args: argparse.Namespace) -> int:
    from supervisor.cli.top import run_top

    return run_top(args)


def _global_options() -> argparse.ArgumentParser:
    """Options every command takes, before or after the command's name."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, metavar="PATH",
                        help="config file (default: $JOBVISOR_CONFIG, else ./config.toml "
                             "when present, else the built-in defaults)")
    return common


GLOBAL = _global_options()


def _command(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
             text: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=text, description=text, parents=[GLOBAL])


def _whole_number(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``least``, or an error saying why."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
        return value

    return parse


def _seconds_within(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: seconds from ``low`` to ``high`` (NaN and infinity refused)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not low <= value <= high:  # NaN fails both
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g} seconds")
        return value

    return parse


_positive_int = _whole_number(1)
_count = _whole_number(0)
_seconds = _seconds_within(0, 10 * 365 * 86400)
_positive_seconds = _seconds_within(0.05, 3600)


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _dead_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dead = _command(sub, "dead", "dead-letter queue: list, groups, show, requeue, purge")
    dead.add_argument("action", choices=["list", "groups", "show", "requeue", "purge"],
                      help="list (filters apply), groups (by function and error type), show "
                           "one, requeue or purge (an id, filters or --all)")
    dead.add_argument("id", nargs="?", help="one job id")
    dead.add_argument("--queue", help="the queue whose dead letters to act on (default: "
                                      "[defaults] queue, \"default\" unless configured)")
    dead.add_argument("--function", help="only jobs of this module:function")
    dead.add_argument("--error-type", help="only jobs whose last error has this type or kind")
    dead.add_argument("--older-than", type=_seconds, metavar="SECONDS",
                      help="only jobs dead longer than this")
    dead.add_argument("--newer-than", type=_seconds, metavar="SECONDS",
                      help="only jobs dead at most this long")
    dead.add_argument("--limit", type=_positive_int, default=100,
                      help="list at most this many jobs (default: 100)")
    dead.add_argument("--all", action="store_true", help="requeue/purge every dead job")
    dead.add_argument("--scan", type=_positive_int, default=DEFAULT_GROUP_SCAN, metavar="N",
                      help="groups: group the newest N dead jobs (default: "
                           f"{DEFAULT_GROUP_SCAN}, at most {MAX_GROUP_SCAN})")
    _json_flag(dead)
    dead.set_defaults(func=ops_commands.cmd_dead)


def _health_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    health = _command(sub, "health", "check Redis, live supervisors and the [health] "
                      "thresholds; exit 0 when all pass, 1 when a check fails, 4 when Redis "
                      "does not answer")
    health.add_argument("--max-lag", type=_seconds, metavar="SECONDS",
                        help="fail when a queue's oldest queued job has waited longer "
                             "(default: [health] max_lag; 0: off)")
    health.add_argument("--max-dead", type=_count, metavar="N",
                        help="fail when a queue holds more dead jobs (default: [health] "
                             "max_dead; 0: off)")
    _json_flag(health)
    health.set_defaults(func=ops_commands.cmd_health)


def _jobs_group(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``jobvisor jobs ACTION``: a command group, so more actions on jobs fit under it."""
    group = _command(sub, "jobs", "jobs of a queue in any state")
    actions = group.add_subparsers(dest="jobs_action", required=True, metavar="ACTION",
                                   help="list: jobs of one queue and state")
    ls = _command(actions, "list", "jobs of one queue and state, filtered, a page at a time; "
                  "prints the --cursor of the next page")
    ls.add_argument("--queue", help="default: [defaults] queue (\"default\" unless configured)")
    ls.add_argument("--state", default="queued", choices=LISTED_STATES, help="default: queued")
    ls.add_argument("--function", help="only jobs of this module:function")
    ls.add_argument("--error-type", help="only jobs whose last error has this type or kind")
    ls.add_argument("--text", help="only jobs with this text (any case) in the id, arguments "
                                   "or last error")
    ls.add_argument("--older-than", type=_seconds, metavar="SECONDS",
                    help="only jobs that ended longer ago than this (not yet ended: that "
                         "were enqueued)")
    ls.add_argument("--newer-than", type=_seconds, metavar="SECONDS",
                    help="only jobs that ended at most this long ago (not yet ended: that "
                         "were enqueued)")
    ls.add_argument("--limit", type=_positive_int, default=50,
                    help="jobs per page, at most 500 (default: 50)")
    ls.add_argument("--oldest-first", action="store_true",
                    help="the index's order instead of newest first (for queued jobs: the "
                         "order they run in)")
    ls.add_argument("--cursor", help="go on from where the previous page ended (with the "
                                     "same options)")
    ls.add_argument("--scan", type=_positive_int, default=20_000, metavar="N",
                    help="look at most at this many jobs for one page (default: 20000): a "
                         "filter that matches few stops there and prints where to go on")
    _json_flag(ls)
    ls.set_defaults(func=query_commands.cmd_jobs_list)


def _query_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _jobs_group(sub)
    delete = _command(sub, "delete", "delete jobs for good (one not yet started is canceled "
                      "first; a running one is refused)")
    delete.add_argument("ids", nargs="+", metavar="ID", help="the jobs' ids")
    _json_flag(delete)
    delete.set_defaults(func=query_commands.cmd_delete)
    clear = _command(sub, "clear", "cancel every queued job of a queue")
    clear.add_argument("queue", help="queue name")
    clear.add_argument("--yes", "-y", action="store_true",
                       help="do not ask for confirmation (needed when stdin is not a terminal)")
    _json_flag(clear)
    clear.set_defaults(func=query_commands.cmd_clear)


def _job_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    enq = _command(sub, "enqueue", "enqueue a job by name; prints its id")
    enq.add_argument("name", help="module:function")
    enq.add_argument("args", nargs="*", help="arguments, each a JSON value: 2, 1.5, true, "
                     "null, [1, 2], and strings quoted for JSON inside shell quotes: '\"k1\"'")
    enq.add_argument("--kwargs", help="keyword arguments as a JSON object")
    enq.add_argument("--queue", help="queue to put the job on (default: [defaults] queue, "
                                     "\"default\" unless configured)")
    enq.add_argument("--priority", help="LOW, NORMAL, HIGH, CRITICAL or 0..1000")
    enq.add_argument("--delay", type=_seconds, metavar="SECONDS",
                     help="run no sooner than this many seconds from now")
    enq.add_argument("--at", help="ISO 8601 time with offset, e.g. 2026-12-01T09:00:00+00:00")
    enq.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                     help="hard timeout: the worker is killed past it")
    enq.add_argument("--max-attempts", type=_positive_int, metavar="N",
                     help="attempts before the job is dead (default: the function's, else "
                          "[defaults] max_attempts)")
    enq.add_argument("--id", help="custom job id (enqueueing it again returns the same job)")
    enq.add_argument("--depends-on", action="append", metavar="ID",
                     help="wait until this job completes (repeat for several parents)")
    enq.add_argument("--on-parent-failure", choices=["cancel", "run"],
                     help="when a parent ends dead or canceled (default: cancel)")
    enq.add_argument("--unique-for", type=float, metavar="SECONDS",
                     help="return the existing job while one with these arguments is pending")
    enq.add_argument("--unique-key", help="uniqueness key instead of function and arguments")
    enq.add_argument("--limit", action="append", metavar="NAME", dest="limits",
                     help="also run under this named limit (repeat for several)")
    enq.add_argument("--meta", help="free-form JSON object kept with the job (who or what "
                     "enqueued it), shown by show and given to the job as ctx.meta")
    enq.add_argument("--backoff", metavar="JSON",
                     help='retry delays of this job, e.g. \'{"kind": "fixed", "base": 5}\' '
                          "(kind, base, factor, cap, jitter; default: the function's)")
    for flag, text in (("--retry-on", "retry only on this exception (class name: "
                                      "ConnectionError, mymod.MyError; repeat for several)"),
                       ("--dont-retry-on", "never retry on this exception (repeat)")):
        enq.add_argument(flag, action="append", metavar="EXCEPTION", help=text)
    enq.add_argument("--encrypt", action="store_true",
                     help="store its arguments and result encrypted (as @job(encrypt=True), "
                          "which a function's supervisors publish, does by itself)")
    enq.add_argument("--inline", action="store_true",
                     help="run the job here and now instead of queueing it (imports "
                          "[worker].modules; prints its result; nothing is written to Redis)")
    _json_flag(enq)
    enq.set_defaults(func=job_commands.cmd_enqueue)
    for name, func, text in (("show", job_commands.cmd_show, "everything about one job"),
                             ("result", job_commands.cmd_result, "print a completed job's result")):
        p = _command(sub, name, text)
        p.add_argument("id", help="the job's id (printed by enqueue)")
        _json_flag(p)
        p.set_defaults(func=func)
    wait = _command(sub, "wait", "live progress until a job ends; exit code says how "
                    "(0 completed, 10 dead, 11 canceled, 12 not done when --timeout ran out)")
    wait.add_argument("id", help="the job's id (printed by enqueue)")
    wait.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                      help="give up after this long (exit 12); default: wait until it ends")
    _json_flag(wait)
    wait.set_defaults(func=job_commands.cmd_wait)
    cancel = _command(sub, "cancel", "cancel a job (a running one is killed)")
    cancel.add_argument("id", help="the job's id")
    cancel.add_argument("--reason", default="canceled from the command line",
                        help="kept with the job and shown by show")
    cancel.set_defaults(func=job_commands.cmd_cancel)


def _ops_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, func, text in (("stats", ops_commands.cmd_stats, "per-queue counts and rates"),
                             ("hosts", ops_commands.cmd_hosts, "live supervisors"),
                             ("workers", ops_commands.cmd_workers, "every live worker")):
        p = _command(sub, name, text)
        _json_flag(p)
        p.set_defaults(func=func)
        if name == "stats":
            p.add_argument("--functions", action="store_true",
                           help="per function instead: outcomes in the last minute and hour, "
                                "average run time of an attempt in the last hour")
    _dead_parser(sub)
    for name in ("pause", "resume"):
        p = _command(sub, name, f"{name} claiming from a queue")
        p.add_argument("queue", help="queue name")
        if name == "pause":
            p.add_argument("--new", action="store_true",
                           help="pause a queue that has no jobs and no workers yet, on purpose")
        p.set_defaults(func=ops_commands.cmd_pause)
    scale = _command(sub, "scale", "set a running supervisor's worker count (of one pool)")
    scale.add_argument("workers", type=int, metavar="N",
                       help="the number of workers to run (0 stops a pool; at most the "
                            "supervisor's max_workers, all pools together)")
    scale.add_argument("--host", help="supervisor id (host:pid, see `jobvisor hosts`)")
    scale.add_argument("--pool", metavar="NAME", help="the pool to scale (default: the "
                       "default pool, of [worker] queues)")
    scale.set_defaults(func=ops_commands.cmd_scale)
    pool = _command(sub, "pool", "pause or resume one pool of a running supervisor (its "
                    "workers stay up and claim nothing while paused)")
    pool.add_argument("action", choices=("pause", "resume"),
                      help="pause: its workers stay up but claim nothing; resume: claim again")
    pool.add_argument("name", metavar="NAME", help="the pool (see `jobvisor hosts`)")
    pool.add_argument("--host", help="supervisor id (host:pid, see `jobvisor hosts`)")
    pool.set_defaults(func=ops_commands.cmd_pool)
    reload = _command(sub, "reload", "reload a running supervisor (SIGHUP or remote)")
    reload.add_argument("--host", help="supervisor id (host:pid) to reload through Redis")
    reload.set_defaults(func=ops_commands.cmd_reload)
    events = _command(sub, "events", "the event stream")
    events.add_argument("--follow", "-f", action="store_true",
                        help="keep printing events as they happen")
    events.add_argument("--queue", help="only events of this queue")
    events.add_argument("--job", metavar="ID", help="only events of this job")
    events.add_argument("--count", type=_count, default=20,
                        help="recent events shown first (default: 20)")
    events.add_argument("--for", dest="for_seconds", type=_seconds, metavar="SECONDS",
                        help="stop following after this long")
    _json_flag(events)
    events.set_defaults(func=ops_commands.cmd_events)
    top = _command(sub, "top", "live view of queues and workers")
    top.add_argument("--once", action="store_true", help="render once and exit")
    top.add_argument("--interval", type=_positive_seconds, default=1.0, metavar="SECONDS",
                     help="time between refreshes, 0.05 to 3600 (default: 1)")
    top.set_defaults(func=cmd_top)
    _health_parser(sub)
    functions = _command(sub, "functions", "the @job functions of [worker].modules with the "
                         "options each runs with (imports them; exit 3 when one fails)")
    _json_flag(functions)
    functions.set_defaults(func=function_commands.cmd_functions)
    schedules = _command(sub, "schedules", "cron schedules: next fire times, last run; "
                         "pause, resume or trigger one on every supervisor")
    schedules.add_argument("action", nargs="?", default="list",
                           choices=["list", "pause", "resume", "trigger"],
                           help="list (default); pause or resume NAME on every supervisor "
                                "(missed ticks never run); trigger NAME: enqueue its job now")
    schedules.add_argument("name", nargs="?", help="the schedule's name")
    schedules.add_argument("--next", type=_positive_int, default=3,
                           help="fire times shown (default 3)")
    _json_flag(schedules)
    schedules.set_defaults(func=schedule_commands.cmd_schedules)


def _dashboard_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    web = _command(sub, "dashboard", "serve the web dashboard and HTTP API; `dashboard "
                   "passwd NAME` prints a users-file line")
    web.add_argument("action", nargs="?", choices=["serve", "passwd"], default="serve",
                     help="serve (default) or passwd: hash a password for [dashboard] users_file")
    web.add_argument("name", nargs="?", help="passwd: the user's name")
    web.add_argument("--bind", metavar="HOST:PORT",
                     help="address to listen on (default: [dashboard] bind, 127.0.0.1:9181)")
    web.add_argument("--role", choices=["viewer", "admin"], default="viewer",
                     help="passwd: viewer reads, admin also acts (default: viewer)")
    web.add_argument("--generate", action="store_true",
                     help="passwd: make a random secret (for API scripts) instead of asking")
    web.set_defaults(func=cmd_dashboard)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobvisor", description=__doc__)
    p.add_argument("--config", metavar="PATH",
                   help="config file (default: $JOBVISOR_CONFIG, else ./config.toml when "
                        "present, else the built-in defaults); also accepted after the command")
    sub = p.add_subparsers(dest="command", required=True)
    run = _command(sub, "run", "run the supervisor (and the embedded server)")
    run.add_argument("--log-level", default="INFO", type=str.upper,
                     choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default: INFO")
    run.add_argument("--log-format", choices=["text", "json"], default="text",
                     help="one line per event as text (default) or JSON")
    run.add_argument("--log-file", help="log to this file (SIGUSR1 reopens it)")
    run.set_defaults(func=cmd_run)
    demo = _command(sub, "demo", "start a supervisor, run example jobs, show a summary")
    demo.add_argument("--jobs", type=_positive_int, default=40,
                      help="prime-counting jobs to run (default: 40)")
    demo.add_argument("--keep", action="store_true",
                      help="keep the supervisor and the dashboard running after the summary "
                           "(Ctrl-C stops them)")
    demo.set_defaults(func=cmd_demo)
    _dashboard_parser(sub)
    _job_parsers(sub)
    _query_parsers(sub)
    _ops_parsers(sub)
    encryption_commands.add_parsers(sub, _command)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.func is not cmd_run:  # only the supervisor installs handlers for them
        signal.pthread_sigmask(signal.SIG_UNBLOCK, JOB_CONTROL)
    started = time.monotonic()
    try:
        code = args.func(args)
    except HaltServer as halt:
        print(f"jobvisor: {halt.reason}", file=sys.stderr)
        code = int(halt.code)
    except ConfigError as exc:
        print(f"jobvisor: {exc}", file=sys.stderr)
        code = int(ExitCode.CONFIG_ERROR)
    except jobs.BrokerUnavailable as exc:
        waited = time.monotonic() - started
        print(f"jobvisor: {exc} (gave up after {waited:.1f} s)", file=sys.stderr)
        code = int(ExitCode.REDIS_UNAVAILABLE)
    except (JobsError, json.JSONDecodeError, TypeError) as exc:
        print(f"jobvisor: {exc}", file=sys.stderr)
        code = int(ExitCode.ERROR)
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 0
    sys.exit(code)
