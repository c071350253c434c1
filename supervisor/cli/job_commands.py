"""CLI commands about single jobs: enqueue, show, wait, result, cancel."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import Any

from jobs import Job, JobState, Queue
from jobs.cluster import served_queues, unserved_warning
from jobs.effective import FunctionOptions, published_functions
from jobs.errors import ConfigurationError
from jobs.job import stored_value
from jobs.query import job_view
from supervisor.cli.common import backoff_text, broker_for, connect, load, output
from supervisor.errors import ExitCode
from supervisor.runtime.preload import loaded_functions, preload


def _parse_at(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(
            f"--at {text!r} is not an ISO 8601 time (e.g. 2026-12-01T09:30:00+00:00)"
        ) from None
    if at.tzinfo is None:
        raise ConfigurationError(f"--at {text!r} needs a time zone offset (e.g. +00:00)")
    return at


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (JSON has no NaN or Infinity)")


def json_argument(text: str, what: str) -> Any:
    """One command-line argument as JSON, or an error naming it and how to quote it."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        detail = str(exc) if not isinstance(exc, json.JSONDecodeError) else exc.msg.lower()
        hint = ""
        if isinstance(exc, json.JSONDecodeError) and not text.lstrip().startswith(
                ('"', "[", "{")):
            hint = (f"; to pass the string {text}, quote it for JSON inside shell quotes: "
                    f"'\"{text}\"'")
        raise ConfigurationError(f"{what} {text!r} is not a JSON value ({detail}){hint}") from None


def _enqueue_options(args: argparse.Namespace) -> dict[str, Any]:
    backoff = json_argument(args.backoff, "--backoff") if args.backoff else None
    if backoff is not None and not isinstance(backoff, dict):
        raise ConfigurationError(
            '--backoff must be a JSON object, e.g. \'{"kind": "fixed", "base": 5}\'')
    meta = json_argument(args.meta, "--meta") if args.meta else None
    if meta is not None and not isinstance(meta, dict):
        raise ConfigurationError("--meta must be a JSON object, e.g. '{\"triggered_by\": \"ops\"}'")
    return {k: v for k, v in (
        ("priority", args.priority), ("delay", args.delay), ("timeout", args.timeout),
        ("max_attempts", args.max_attempts), ("job_id", args.id),
        ("at", _parse_at(args.at) if args.at else None), ("depends_on", args.depends_on),
        ("on_parent_failure", args.on_parent_failure), ("unique_for", args.unique_for),
        ("unique_key", args.unique_key), ("backoff", backoff), ("retry_on", args.retry_on),
        ("dont_retry_on", args.dont_retry_on), ("inline", args.inline or None),
        ("limits", args.limits), ("meta", meta), ("encrypt", args.encrypt or None))
        if v is not None}


def cmd_enqueue(args: argparse.Namespace) -> int:
    config, _ = load(args)
    broker = broker_for(config)
    values = [json_argument(a, f"argument {i}") for i, a in enumerate(args.args, 1)]
    kwargs = json_argument(args.kwargs, "--kwargs") if args.kwargs else {}
    if not isinstance(kwargs, dict):
        raise ConfigurationError("--kwargs must be a JSON object")
    if args.inline:  # the function must be registered here: load [worker].modules
        preload(config.worker.modules, config.worker.path)
    options = _enqueue_options(args)
    if not args.inline and "encrypt" not in options:
        # Not imported here: a function its supervisors published as @job(encrypt=True).
        published = published_functions(broker).get(args.name)
        if published is not None and published.encrypt:
            options["encrypt"] = True
    job = Queue(args.queue, broker).options(**options).enqueue(args.name, *values, **kwargs)
    if args.inline:
        return _ran_inline(args, job, loaded_functions(config.defaults))
    print(json.dumps({"id": job.id}) if args.json else job.id)
    return 0


def _ran_inline(args: argparse.Namespace, job: Job,
                functions: dict[str, FunctionOptions]) -> int:
    """``enqueue --inline``: the outcome, as ``wait`` prints it; nothing was written."""
    view = job_view(job.record, job.broker, published=functions)
    if args.json:
        print(json.dumps(view, default=str))
    elif job.state is JobState.COMPLETED:
        print(json.dumps(view["result"]))
    else:
        error = view["error"] or {}
        print((error.get("traceback") or "").rstrip(), file=sys.stderr)
        print(f"jobvisor: {job.function} ran inline and failed: {error.get('type')}: "
              f"{error.get('message')}", file=sys.stderr)
    return _exit_code(job.state)


def _show_text(d: dict[str, Any]) -> str:
    lines = [f"{k:13} {d[k]}" for k in ("id", "function", "queue", "priority", "state")]
    lines += _workflow_lines(d)
    lines.append(f"{'attempts':13} {d['attempts']} of {d['max_attempts']}")
    lines.append(f"{'backoff':13} {backoff_text(d['backoff'])}")
    for key in ("retry_on", "dont_retry_on"):
        if d[key]:
            lines.append(f"{key:13} {', '.join(d[key])}")
    lines += [f"{k:13} {d[k]}" for k in ("args", "kwargs", "result", "progress")]
    if d["meta"]:
        lines.append(f"{'meta':13} {json.dumps(d['meta'], ensure_ascii=False)}")
    for key in ("enqueued_at", "started_at", "finished_at", "due_at"):
        if d[key]:
            lines.append(f"{key:13} {d[key]}")
    if d["cancel_reason"]:
        lines.append(f"{'canceled':13} {d['cancel_reason']}")
    for e in d["errors"]:
        lines.append(f"attempt {e['attempt']} failed ({e['kind']}) {e['type']}: {e['message']}")
    if d["error"] and d["error"]["traceback"]:
        lines.append(d["error"]["traceback"].rstrip())
    lines += [f"log  {line}" for line in d["log"]]
    return "\n".join(lines)


def _workflow_lines(d: dict[str, Any]) -> list[str]:
    """Why a job is where it is: parents awaited, a limit holding it, a pending cancel."""
    lines = []
    if d["waiting_on"]:
        lines.append(f"{'waiting_on':13} {d['waiting_on']} parent job(s) not final yet")
    if d["held_by"]:
        lines.append(f"{'held_by':13} limit {d['held_by']}")
    if d["cancel_requested"]:
        lines.append(f"{'cancel':13} requested: {d['cancel_requested']}")
    if d["batch_id"]:
        lines.append(f"{'batch':13} {d['batch_id']}")
    return lines


def warn_if_unserved(job: Job) -> None:
    """A job that can only wait, because nothing serves its queue, says so (on stderr)."""
    if job.state in (JobState.QUEUED, JobState.SCHEDULED, JobState.WAITING) and \
            job.queue not in served_queues(job.broker):
        print(unserved_warning(job.queue, job.broker), file=sys.stderr)


def cmd_show(args: argparse.Namespace) -> int:
    broker = connect(args)
    job = Job.fetch(args.id, broker)
    output(args, job_view(job.record, broker, broker.jobs.job_log(args.id)), _show_text)
    warn_if_unserved(job)
    return 0


def _exit_code(state: JobState) -> int:
    return {JobState.COMPLETED: 0, JobState.DEAD: ExitCode.JOB_DEAD,
            JobState.CANCELED: ExitCode.JOB_CANCELED}.get(state, ExitCode.JOB_NOT_DONE)


def cmd_wait(args: argparse.Namespace) -> int:
    """A live progress bar until the job is final; the exit code says how it ended."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    broker = connect(args)
    job = Job.fetch(args.id, broker)
    warn_if_unserved(job)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[msg]}"),
               TimeElapsedColumn())
    with Progress(*columns, transient=False, disable=args.json or not sys.stderr.isatty(),
                  console=None) as bar:
        task = bar.add_task(f"{job.function} {job.id}", total=None, msg="")
        while not job.refresh().state.is_final:
            p = job.progress or {}
            bar.update(task, completed=p.get("done", 0), total=p.get("total"),
                       msg=f"[{job.state}] {p.get('message') or ''}")
            if deadline is not None and time.monotonic() >= deadline:
                break
            broker.jobs.wait_done(job.id, 0.2)  # wakes at once when the job finishes
    output(args, job_view(job.record, broker), lambda d: _ended_text(d, args.timeout))
    return _exit_code(job.state)


def _ended_text(d: dict[str, Any], timeout: float | None) -> str:
    if d["state"] == "completed":
        return f"completed: {json.dumps(d['result'])}"
    if d["state"] in ("dead", "canceled"):
        error = d["error"] or {}
        why = d["cancel_reason"] if d["state"] == "canceled" else \
            f"{error.get('type')}: {error.get('message')}" if error else "no error recorded"
        return f"{d['state']}: {why}"
    return f"still {d['state']} after {timeout:g} s"


def cmd_result(args: argparse.Namespace) -> int:
    job = Job.fetch(args.id, connect(args))
    if job.state is not JobState.COMPLETED:
        print(f"jobvisor: job {args.id} is {job.state}, no result", file=sys.stderr)
        return _exit_code(job.state)
    print(json.dumps(stored_value(job.record, job.broker)))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    job = Job.fetch(args.id, connect(args))
    if job.cancel(args.reason):
        if job.refresh().state is JobState.ACTIVE:
            print(f"cancel requested for running job {args.id}: its supervisor kills it "
                  "within about a second")
        else:
            print(f"canceled {args.id}")
        return 0
    print(f"jobvisor: job {args.id} already ended ({job.refresh().state}): nothing to cancel",
          file=sys.stderr)
    return int(ExitCode.ERROR)
