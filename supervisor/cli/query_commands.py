"""CLI commands over the query layer (``jobs.query``): list jobs, delete jobs, clear a
queue, dead letters by group. The web app reads through the same functions, so both
show the same jobs and the same figures."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from jobs.effective import published_functions
from jobs.errors import ConfigurationError
from jobs.query import (
    JobFilter,
    JobPage,
    act_on,
    clear_queue,
    dead_groups,
    iso,
    job_view,
    list_jobs,
)
from jobs.query.groups import DeadGroups
from jobs.query.listing import records_of
from jobs.records import JobRecord
from jobs.states import JobState
from jobs.store.keys import check_name
from supervisor.cli.common import actor, ago, connect, did_you_mean, duration, output, table
from supervisor.errors import ExitCode


def _where(args: argparse.Namespace) -> JobFilter:
    return JobFilter(function=args.function, error_type=args.error_type, text=args.text,
                     older_than=args.older_than, newer_than=args.newer_than)


def _entered(r: JobRecord) -> float | None:
    """When the job entered its state, as far as its record tells."""
    if r.finished_at:
        return r.finished_at
    if r.state is JobState.ACTIVE and r.started_at:
        return r.started_at
    if r.state is JobState.SCHEDULED and r.errors and r.errors[-1].at:
        return r.errors[-1].at  # waiting out a retry's backoff since that failure
    return r.enqueued_at


def _shown_state(r: JobRecord) -> str:
    return "retrying" if r.state is JobState.SCHEDULED and r.attempts else r.state.value


def _short_error(view: dict[str, Any]) -> str:
    error = view["error"]
    if not error:
        return "-"
    text = f"{error['type']}: {error['message']}".replace("\n", " ")
    return text if len(text) <= 60 else text[:59] + "…"


def _page_footer(page: JobPage) -> str | None:
    if not page.exhausted:
        return f"looked at {page.scanned:,} jobs; more may match: --cursor {page.next}"
    if page.next:
        return f"next page: --cursor {page.next}"
    return None


def _page_text(args: argparse.Namespace, page: JobPage, views: list[dict[str, Any]]) -> str:
    now = time.time()
    lines = []
    if views:
        lines.append(table(
            [[v["id"], v["function"] or "-", _shown_state(r),
              f"{v['attempts']}/{v['max_attempts']}",
              duration(now - since) if (since := _entered(r)) else "-", _short_error(v)]
             for v, r in zip(views, page.jobs, strict=True)],
            ["ID", "FUNCTION", "STATE", "ATTEMPTS", "IN STATE", "LAST ERROR"]))
    else:
        matching = "" if _where(args).is_empty() else " matching the filter"
        lines.append(f"no {args.state} jobs{matching} on this page of queue {args.queue!r}"
                     if args.cursor or not page.exhausted else
                     f"no {args.state} jobs{matching} in queue {args.queue!r}")
    footer = _page_footer(page)
    if footer:
        lines.append(footer)
    return "\n".join(lines)


def cmd_jobs_list(args: argparse.Namespace) -> int:
    broker = connect(args)
    args.queue = args.queue or broker.defaults.queue
    page = list_jobs(broker, args.queue, args.state, where=_where(args), cursor=args.cursor,
                     limit=args.limit, newest_first=not args.oldest_first, scan=args.scan)
    published = published_functions(broker)
    views = [job_view(r, broker, published=published) for r in page.jobs]
    output(args, {"jobs": views, "next": page.next, "scanned": page.scanned,
                  "exhausted": page.exhausted}, lambda _: _page_text(args, page, views))
    return 0


def _refusal(r: JobRecord | None, job_id: str) -> str | None:
    """Why ``delete`` leaves a job alone, or None when it goes ahead."""
    if r is None:
        return "no such job (never enqueued, already deleted, or its record expired)"
    if r.state is JobState.ACTIVE:
        return f"running: cancel it first (`jobvisor cancel {job_id}`), then delete it"
    return None


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete jobs for good, each through its own queue; says why for every one left."""
    broker = connect(args)
    ids = list(dict.fromkeys(args.ids))
    found = {r.id: r for r in records_of(broker, ids)}
    skipped = {i: why for i in ids if (why := _refusal(found.get(i), i))}
    by_queue: dict[str, list[str]] = {}
    for i in ids:
        if i not in skipped:
            by_queue.setdefault(found[i].queue, []).append(i)
    who = actor()
    for queue, chosen in by_queue.items():
        act_on(broker, queue, chosen, "delete", who=who, reason=f"deleted by {who}")
    tried = [i for chosen in by_queue.values() for i in chosen]
    for r in records_of(broker, tried):  # changed state meanwhile (started, say)
        skipped[r.id] = f"{r.state} now: not deleted"
    deleted = [i for i in ids if i not in skipped]
    for i, why in skipped.items():
        print(f"jobvisor: {i}: {why}", file=sys.stderr)
    output(args, {"deleted": deleted, "skipped": skipped}, lambda _: (
        f"deleted {len(deleted)} job(s)" + (f", skipped {len(skipped)}" if skipped else "")))
    return int(ExitCode.ERROR) if skipped else 0


def _confirmed(question: str) -> bool:
    """Ask on the terminal (the question on stderr, so stdout stays the command's)."""
    print(question, end=" ", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def cmd_clear(args: argparse.Namespace) -> int:
    """Cancel every queued job of a queue, after a confirmation naming the count."""
    broker = connect(args)
    queue = check_name("queue", args.queue)
    held = broker.jobs.held(queue)  # in their limits' held sets: cleared too
    count = broker.jobs.counts(queue, ["queued"])["queued"] + held
    if count == 0:
        known = broker.jobs.known_queues()  # SMEMBERS: no SCAN, which the worker's ACL lacks
        if queue not in known:
            raise ConfigurationError(f"queue {queue!r} does not exist: no job was ever "
                                     f"enqueued to it{did_you_mean(queue, known)}")
        output(args, {"queue": queue, "cleared": 0, "held": held},
               lambda _: f"queue {queue!r} has no queued jobs: nothing to clear")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigurationError(f"clear would cancel {count:,} queued jobs of queue "
                                     f"{queue!r}; there is no terminal to confirm on: pass "
                                     "--yes to clear them")
        if not _confirmed(f"clear {count:,} queued jobs of queue {queue!r}? [y/N]"):
            print("jobvisor: nothing cleared", file=sys.stderr)
            return int(ExitCode.ERROR)
    done = clear_queue(broker, queue, who=actor()).done
    note = f" ({held:,} of them held back by a rate or concurrency limit)" if held else ""
    output(args, {"queue": queue, "cleared": done, "held": held},
           lambda _: f"cleared {done:,} queued jobs of queue {queue!r}{note}")
    return 0


def _groups_text(queue: str, found: DeadGroups) -> str:
    if not found.groups:
        return f"no dead jobs in {queue}"
    lines = [table([[g.function, g.error_type or "-", str(g.count), ago(g.last_at),
                     g.message.replace("\n", " ")[:60]] for g in found.groups],
                   ["FUNCTION", "ERROR", "COUNT", "NEWEST", "MESSAGE"])]
    if not found.complete:
        lines.append(f"grouped the newest {found.scanned:,} dead jobs only (--scan N to "
                     "group more); requeue and purge act on every dead job of a group")
    lines.append(f"act on a group: jobvisor dead requeue|purge --queue {queue} "
                 "--function F --error-type E")
    return "\n".join(lines)


def cmd_dead_groups(args: argparse.Namespace) -> int:
    found = dead_groups(connect(args), args.queue, scan=args.scan)
    data = {"groups": [{"function": g.function, "error_type": g.error_type, "count": g.count,
                        "last_at": iso(g.last_at), "message": g.message}
                       for g in found.groups],
            "scanned": found.scanned, "complete": found.complete}
    output(args, data, lambda _: _groups_text(args.queue, found))
    return 0
