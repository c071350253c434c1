"""``jobvisor``: one command line for running and operating jobvisor."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import jobs
from jobs import Broker, Job, JobsError, Queue
from jobs.connection import embedded_url
from supervisor.config import Config, config_path, load_config
from supervisor.errors import ConfigError, ExitCode, HaltServer
from supervisor.logs import configure


def _load(args: argparse.Namespace) -> tuple[Config, str | None]:
    path = config_path(args.config)
    return load_config(path), str(path) if path else None


def _broker(config: Config) -> Broker:
    url = config.redis.url or os.environ.get("JOBVISOR_REDIS_URL") or embedded_url(
        config.supervisor.data_dir)
    return jobs.connect(url, redis_settings=config.redis, defaults=config.defaults)


def cmd_run(args: argparse.Namespace) -> int:
    from supervisor.arbiter import Arbiter
    from supervisor.embedded import EmbeddedServer

    reopen = configure(args.log_level, args.log_format, args.log_file)
    config, path = _load(args)
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


def cmd_enqueue(args: argparse.Namespace) -> int:
    config, _ = _load(args)
    broker = _broker(config)
    values = [json.loads(a) for a in args.args]
    kwargs = json.loads(args.kwargs) if args.kwargs else {}
    if not isinstance(kwargs, dict):
        raise ConfigError("--kwargs must be a JSON object")
    opts: dict[str, Any] = {k: v for k, v in (
        ("priority", args.priority), ("delay", args.delay), ("timeout", args.timeout),
        ("max_attempts", args.max_attempts), ("job_id", args.id)) if v is not None}
    job = Queue(args.queue, broker).options(**opts).enqueue(args.name, *values, **kwargs)
    print(job.id)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    config, _ = _load(args)
    job = Job.fetch(args.id, _broker(config))
    r = job.record
    errors = [{"attempt": e.attempt, "kind": e.kind.value, "type": e.type,
               "message": e.message, "traceback": e.traceback} for e in r.errors]
    data: dict[str, Any] = {
        "id": r.id, "function": job.function, "queue": r.queue, "priority": r.priority,
        "state": r.state.value, "attempts": r.attempts,
        "args": r.spec.args if r.spec else None, "kwargs": r.spec.kwargs if r.spec else None,
        "errors": errors,
        "result": jobs.records.any_decoder.decode(r.result) if r.result else None,
        "enqueued_at": r.enqueued_at, "started_at": r.started_at, "finished_at": r.finished_at,
    }
    if args.json:
        print(json.dumps(data, default=str))
    else:
        for key, value in data.items():
            if key != "errors":
                print(f"{key:12} {value}")
        for e in errors:
            print(f"error #{e['attempt']} ({e['kind']}) {e['type']}: {e['message']}")
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    config, _ = _load(args)
    value = Job(args.id, _broker(config)).result(timeout=args.timeout)
    print(json.dumps(value, default=str))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from supervisor.demo import run_demo

    return run_demo(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobvisor", description=__doc__)
    p.add_argument("--config", help="config file (default: $JOBVISOR_CONFIG or ./config.toml)")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the supervisor (and the embedded server)")
    run.add_argument("--log-level", default="INFO")
    run.add_argument("--log-format", choices=["text", "json"], default="text")
    run.add_argument("--log-file", help="log to this file (SIGUSR1 reopens it)")
    run.set_defaults(func=cmd_run)

    enq = sub.add_parser("enqueue", help="enqueue a job by name; prints its id")
    enq.add_argument("name", help="module:function")
    enq.add_argument("args", nargs="*", help="arguments, each a JSON value")
    enq.add_argument("--kwargs", help="keyword arguments as a JSON object")
    enq.add_argument("--queue", default="default")
    enq.add_argument("--priority", help="LOW, NORMAL, HIGH, CRITICAL or 0..1000")
    enq.add_argument("--delay", type=float, help="seconds from now")
    enq.add_argument("--timeout", type=float)
    enq.add_argument("--max-attempts", type=int)
    enq.add_argument("--id", help="custom job id (idempotent enqueue)")
    enq.set_defaults(func=cmd_enqueue)

    show = sub.add_parser("show", help="everything about one job")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    wait = sub.add_parser("wait", help="block until a job ends; print its result")
    wait.add_argument("id")
    wait.add_argument("--timeout", type=float)
    wait.set_defaults(func=cmd_wait)

    demo = sub.add_parser("demo", help="start a supervisor, run example jobs, show a summary")
    demo.add_argument("--jobs", type=int, default=40, help="CPU-bound jobs to run")
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        code = args.func(args)
    except HaltServer as halt:
        print(f"jobvisor: {halt.reason}", file=sys.stderr)
        code = int(halt.code)
    except ConfigError as exc:
        print(f"jobvisor: {exc}", file=sys.stderr)
        code = int(ExitCode.CONFIG_ERROR)
    except jobs.BrokerUnavailable as exc:
        print(f"jobvisor: {exc}", file=sys.stderr)
        code = int(ExitCode.REDIS_UNAVAILABLE)
    except (JobsError, json.JSONDecodeError, TypeError) as exc:
        print(f"jobvisor: {exc}", file=sys.stderr)
        code = int(ExitCode.ERROR)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
