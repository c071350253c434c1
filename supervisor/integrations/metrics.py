"""Prometheus metrics, served at ``/metrics`` on ``[metrics] address`` (``endpoint``).

Cluster-wide job counts and durations come from Redis (the totals every worker's
outcome scripts and every enqueue keep); worker, kill and reclaim figures are this
supervisor's own.

Function labels are bounded: the first ``[metrics] max_functions`` function names a
scrape finds keep a label of their own, in the order scrapes first saw them (kept in
Redis, so every supervisor labels alike and a name keeps its series), and every later
one is counted under ``function="other"``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from jobs import Broker
from jobs.queue import COUNTED_STATES
from jobs.stats import OUTCOMES, by_function
from jobs.timeseries import BUCKETS
from supervisor.runtime.health import Health

log = logging.getLogger(__name__)

BOUNDS = (*(f"{x:g}" for x in BUCKETS), "+Inf")
OTHER = "other"  # the function label of every function past the first max_functions


class LocalFigures:
    """What this supervisor counts itself: kills by reason, its workers (as ``jobvisor
    workers`` shows them), their busy and alive seconds per pool, reclaims."""

    def __init__(self, workers: Callable[[], list[dict[str, Any]]],
                 seconds: Callable[[], dict[str, tuple[float, float]]],
                 reclaims: Callable[[], int]) -> None:
        self.kills: Counter[str] = Counter()
        self.workers = workers
        self.seconds = seconds
        self.reclaims = reclaims


class JobvisorCollector(Collector):
    def __init__(self, broker: Broker, local: LocalFigures,
                 max_functions: Callable[[], int]) -> None:
        self.broker = broker
        self.local = local
        self.max_functions = max_functions  # read per scrape: a reload's value applies

    def collect(self) -> Iterator[Metric]:
        yield from self._local()
        try:
            yield from self._cluster()
        except Exception as exc:  # a scrape must not fail because Redis is away
            log.warning("metrics: cannot read Redis: %s", exc)

    def _local(self) -> Iterator[Metric]:
        rows = self.local.workers()
        seconds = self.local.seconds()
        pools = sorted({w["pool"] for w in rows} | set(seconds))
        workers = GaugeMetricFamily("jobvisor_workers", "Workers of this supervisor by pool "
                                    "and state", labels=["pool", "state"])
        states = Counter((w["pool"], w["state"]) for w in rows)
        for pool in pools:
            for state in ("busy", "idle", "booting", "stopping", "paused"):
                workers.add_metric([pool, state], states.get((pool, state), 0))
        yield workers
        health = GaugeMetricFamily(
            "jobvisor_worker_health", "Workers of this supervisor by pool and health flag (ok, "
            "stalled, overrunning, memory, slow_boot)", labels=["pool", "health"])
        flags = Counter((w["pool"], w["health"]) for w in rows)
        for pool in pools:
            for flag in Health:
                health.add_metric([pool, flag.value], flags.get((pool, flag.value), 0))
        yield health
        busy = CounterMetricFamily(
            "jobvisor_worker_busy_seconds",
            "Seconds this supervisor's workers spent on jobs, summed over a pool's workers: "
            "rate() over the rate() of jobvisor_worker_alive_seconds is utilization",
            labels=["pool"])
        alive = CounterMetricFamily(
            "jobvisor_worker_alive_seconds",
            "Seconds this supervisor's workers were alive, summed over a pool's workers",
            labels=["pool"])
        for pool, (b, a) in sorted(seconds.items()):
            busy.add_metric([pool], b)
            alive.add_metric([pool], a)
        yield busy
        yield alive
        kills = CounterMetricFamily("jobvisor_worker_kills", "Workers killed by this supervisor",
                                    labels=["reason"])
        for reason in ("hard_timeout", "heartbeat_lost", "canceled", "crash"):
            kills.add_metric([reason], self.local.kills.get(reason, 0))
        yield kills
        yield CounterMetricFamily("jobvisor_lease_reclaims",
                                  "Jobs put back by this supervisor after their lease expired",
                                  value=self.local.reclaims())

    def _cluster(self) -> Iterator[Metric]:
        b = self.broker
        queues = b.jobs.known_queues()
        totals = {k.decode(): int(v) for k, v in b.client.hgetall(b.keys.totals()).items()}
        # Enqueues count per queue and function: sum them both ways into the totals' shape.
        for field, n in b.client.hgetall(b.keys.enqueued()).items():
            queue, _, function = field.decode().partition("|")
            totals[f"{queue}|enqueued"] = totals.get(f"{queue}|enqueued", 0) + int(n)
            totals[f"fn|{function}|enqueued"] = totals.get(f"fn|{function}|enqueued", 0) + int(n)
        jobs = CounterMetricFamily("jobvisor_jobs", "Job attempts by outcome (all supervisors)",
                                   labels=["queue", "outcome"])
        enqueued = CounterMetricFamily("jobvisor_jobs_enqueued",
                                       "Jobs created by enqueues (all producers)",
                                       labels=["queue"])
        hist = HistogramMetricFamily("jobvisor_job_duration_seconds",
                                     "Run time of job attempts (all supervisors)",
                                     labels=["queue"])
        depth = GaugeMetricFamily("jobvisor_queue_jobs", "Jobs in each state per queue",
                                  labels=["queue", "state"])
        for q in queues:
            for outcome in OUTCOMES:
                jobs.add_metric([q, outcome], totals.get(f"{q}|{outcome}", 0))
            enqueued.add_metric([q], totals.get(f"{q}|enqueued", 0))
            _histogram(hist, [q], totals, f"{q}|")
            for state, n in b.jobs.counts(q, [s.value for s in COUNTED_STATES]).items():
                depth.add_metric([q, state], n)
        yield jobs
        yield enqueued
        yield hist
        yield depth
        yield from self._functions(totals)

    def _functions(self, totals: dict[str, int]) -> Iterator[Metric]:
        """The per-function families, under bounded labels (``labelled``)."""
        grouped = by_function(totals)
        kept = self.labelled(grouped)
        merged: dict[str, Counter[str]] = {}
        for name, figures in grouped.items():
            merged.setdefault(name if name in kept else OTHER, Counter()).update(figures)
        jobs = CounterMetricFamily("jobvisor_function_jobs",
                                   "Job attempts by function and outcome (all supervisors)",
                                   labels=["function", "outcome"])
        enqueued = CounterMetricFamily("jobvisor_function_jobs_enqueued",
                                       "Jobs created by enqueues, by function",
                                       labels=["function"])
        hist = HistogramMetricFamily("jobvisor_function_job_duration_seconds",
                                     "Run time of job attempts by function (all supervisors)",
                                     labels=["function"])
        for label, figures in merged.items():
            for outcome in OUTCOMES:
                jobs.add_metric([label, outcome], figures[outcome])
            enqueued.add_metric([label], figures["enqueued"])
            _histogram(hist, [label], figures, "")
        yield jobs
        yield enqueued
        yield hist

    def labelled(self, names: Iterable[str]) -> set[str]:
        """The function names that keep a label: the first ``max_functions`` seen by any
        scrape. A name is written down only while there is room, so the record of them
        stays as bounded as the labels."""
        most = self.max_functions()
        if most <= 0:
            return set()
        b = self.broker
        key = b.keys.metric_functions()
        seen = {m.decode() for m in b.client.zrange(key, 0, most - 1)}
        room = most - len(seen)
        new = sorted(n for n in names if n not in seen)[:max(room, 0)]
        if new:
            b.client.zadd(key, dict.fromkeys(new, time.time()), nx=True)
            seen = {m.decode() for m in b.client.zrange(key, 0, most - 1)}
        return seen


def _histogram(family: HistogramMetricFamily, labels: list[str], figures: Mapping[str, int],
               prefix: str) -> None:
    """One histogram sample set from ``<prefix>d|<bound>`` counts and ``<prefix>dsum`` ms."""
    cumulative, buckets = 0, []
    for bound in BOUNDS:
        cumulative += figures.get(f"{prefix}d|{bound}", 0)
        buckets.append((bound, cumulative))
    family.add_metric(labels, buckets, sum_value=figures.get(f"{prefix}dsum", 0) / 1000)
