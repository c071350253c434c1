"""``jobvisor top``: a live view of queues and workers, like htop for jobs."""

from __future__ import annotations

import argparse
import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from jobs import Broker
from jobs.cluster import supervisors
from jobs.stats import queue_stats
from supervisor.cli.common import connect, duration


def render(broker: Broker) -> Group:
    """One frame: a queue table and a worker table."""
    queues = Table(title="queues", expand=True)
    for col in ("queue", "queued", "scheduled", "active", "dead", "done/1m", "failed/1m",
                "throughput", "oldest"):
        queues.add_column(col, justify="left" if col == "queue" else "right")
    for s in queue_stats(broker):
        queues.add_row(s.queue + (" [yellow](paused)" if s.paused else ""), str(s.queued),
                       str(s.scheduled), str(s.active), str(s.dead),
                       str(s.last_minute["completed"]),
                       str(s.last_minute["retried"] + s.last_minute["dead"]),
                       f"{s.throughput:.1f}/s", duration(s.oldest_queued_age))
    workers = Table(title="workers", expand=True)
    for col in ("supervisor", "pool", "pid", "state", "health", "function", "job", "elapsed",
                "rss", "done"):
        workers.add_column(col)
    for e in supervisors(broker):
        for w in e["workers"]:
            busy = w["state"] == "busy"
            health = w.get("health", "-")
            workers.add_row(e["id"], w.get("pool", "default"), str(w["pid"]),
                            "[green]busy" if busy else "[dim]" + w["state"],
                            health if health in ("ok", "-") else f"[red]{health}",
                            w["function"] or "-", w["job"] or "-",
                            duration(w["elapsed"]) if busy else "-",
                            f"{w['rss'] / 2**20:.0f} MiB", str(w["jobs_done"]))
    return Group(queues, workers)


def run_top(args: argparse.Namespace) -> int:
    broker = connect(args)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped: wide enough that nothing is cut
    if args.once or not console.is_terminal:
        console.print(render(broker))
        return 0
    try:
        with Live(render(broker), console=console, screen=False, auto_refresh=False) as live:
            while True:
                time.sleep(args.interval)
                live.update(render(broker), refresh=True)
    except KeyboardInterrupt:
        pass
    return 0
