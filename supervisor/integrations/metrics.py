"""Prometheus metrics, served at ``/metrics`` on ``[metrics] address`` (``endpoint``).

Cluster-wide job counts and durations come from Redis (the totals every worker's
outcome scripts keep); worker, kill and reclaim figures are this supervisor's own.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from jobs import Broker
from jobs.queue import COUNTED_STATES
from jobs.timeseries import BUCKETS

log = logging.getLogger(__name__)

OUTCOMES = ("completed", "retried", "dead", "canceled")


class LocalFigures:
    """What this supervisor counts itself: kills by reason, worker states."""

    def __init__(self, workers: Callable[[], Counter[str]], reclaims: Callable[[], int]) -> None:
        self.kills: Counter[str] = Counter()
        self.workers = workers
        self.reclaims = reclaims


class JobvisorCollector(Collector):
    def __init__(self, broker: Broker, local: LocalFigures) -> None:
        self.broker = broker
        self.local = local

    def collect(self) -> Iterator[Metric]:
        yield from self._local()
        try:
            yield from self._cluster()
        except Exception as exc:  # a scrape must not fail because Redis is away
            log.warning("metrics: cannot read Redis: %s", exc)

    def _local(self) -> Iterator[Metric]:
        workers = GaugeMetricFamily("jobvisor_workers", "Workers of this supervisor by state",
                                    labels=["state"])
        counts = self.local.workers()
        for state in ("busy", "idle", "booting", "stopping", "paused"):
            workers.add_metric([state], counts.get(state, 0))
        yield workers
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
        jobs = CounterMetricFamily("jobvisor_jobs", "Job attempts by outcome (all supervisors)",
                                   labels=["queue", "outcome"])
        hist = HistogramMetricFamily("jobvisor_job_duration_seconds",
                                     "Run time of job attempts (all supervisors)",
                                     labels=["queue"])
        depth = GaugeMetricFamily("jobvisor_queue_jobs", "Jobs in each state per queue",
                                  labels=["queue", "state"])
        for q in queues:
            for outcome in OUTCOMES:
                jobs.add_metric([q, outcome], totals.get(f"{q}|{outcome}", 0))
            cumulative, buckets = 0, []
            for bound in [*(f"{x:g}" for x in BUCKETS), "+Inf"]:
                cumulative += totals.get(f"{q}|d|{bound}", 0)
                buckets.append((bound, cumulative))
            hist.add_metric([q], buckets, sum_value=totals.get(f"{q}|dsum", 0) / 1000)
            for state, n in b.jobs.counts(q, [s.value for s in COUNTED_STATES]).items():
                depth.add_metric([q, state], n)
        yield jobs
        yield hist
        yield depth

