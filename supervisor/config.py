"""config.toml as one typed msgspec schema; ``load_config`` is the only reader."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from jobs.environment import apply_overrides, explain, read_toml
from jobs.errors import ConfigurationError
from jobs.health import DEFAULT_REDIS_TIMEOUT
from jobs.rates import definition
from jobs.schedules import Schedule
from jobs.settings import JobDefaults, RedisSettings, SchedulerSettings, Table
from supervisor.errors import ConfigError
from supervisor.runtime.scaling import POOL_MAX

Seconds = Annotated[float, Meta(gt=0, le=86400 * 7)]
# [redis] secrets: from the environment or a file only, never from config.toml.
SECRETS = ("password", "sentinel_password")
Count = Annotated[int, Meta(ge=0, le=POOL_MAX)]


class SupervisorSettings(Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    data_dir: str = "./var"
    workers: Count = 0
    min_workers: Count = 0
    max_workers: Count = 0
    graceful_timeout: Seconds = 30.0
    heartbeat_timeout: Seconds = 30.0
    lease_timeout: Annotated[float, Meta(ge=1, le=3600)] = 15.0
    kill_grace: Annotated[float, Meta(ge=0, le=60)] = 0.0
    idle_timeout: Seconds = 60.0
    max_jobs_per_child: Annotated[int, Meta(ge=0)] = 0
    max_memory_per_child: Annotated[int, Meta(ge=0)] = 0
    job_memory_limit: Annotated[int, Meta(ge=0)] = 0
    max_boot_failures: Annotated[int, Meta(ge=1, le=1000)] = 5
    aging_after: Annotated[float, Meta(ge=0, le=86400 * 7)] = 0.0
    aging_step: Annotated[int, Meta(ge=1, le=1000)] = 10

    def __post_init__(self) -> None:
        if (self.min_workers or self.max_workers) and self.min_workers > self.max_workers:
            raise ValueError(
                f"min_workers ({self.min_workers}) must not exceed max_workers "
                f"({self.max_workers}): raise supervisor.max_workers or lower "
                "supervisor.min_workers")
        autoscale = 0 < self.min_workers < self.max_workers
        if self.max_workers and not autoscale and self.workers > self.max_workers:
            raise ValueError(
                f"workers ({self.workers}) must not exceed max_workers ({self.max_workers}): "
                "raise supervisor.max_workers or lower supervisor.workers")


QueueName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:\-]{1,128}$")]
LimitName = QueueName  # the same alphabet: both become parts of key names


class WorkerSettings(Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[worker]``; ``queues`` left out is ``[defaults] queue`` alone (``load_config``)."""

    modules: list[str] = msgspec.field(default_factory=lambda: ["examples.cpu"])
    # Directories put first on the import path (relative ones: to the working directory).
    path: list[str] = msgspec.field(default_factory=lambda: ["."])
    queues: Annotated[list[QueueName], Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["default"])
    weights: list[Annotated[float, Meta(gt=0)]] = msgspec.field(default_factory=list)
    # One INFO line per job start and end (id, function, duration, outcome) from the worker.
    log_jobs: bool = False

    def __post_init__(self) -> None:
        if self.weights and len(self.weights) != len(self.queues):
            raise ValueError("weights must give one number per queue (or be empty: strict order)")


class Limit(Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[queue_limits.<queue>]``: a cluster-wide limit on every job of one queue;
    ``[limits.<name>]``: a named one, on every job that names it."""

    rate_limit: str | None = None
    max_concurrency: int | None = None
    burst: int | None = None  # a token bucket of this size instead of the sliding window

    def __post_init__(self) -> None:
        definition(self.rate_limit, self.max_concurrency, self.burst)  # names what is wrong

    @property
    def stored(self) -> str | None:
        return definition(self.rate_limit, self.max_concurrency, self.burst)


class MetricsSettings(Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    address: Annotated[str, Meta(pattern=r"^$|^[A-Za-z0-9_.\-\[\]:]*:[0-9]{1,5}$")] = ""
    # Function names with a label of their own; later ones are summed as "other".
    max_functions: Annotated[int, Meta(ge=0, le=10000)] = 50

    def __post_init__(self) -> None:
        if self.address and not 0 < int(self.address.rpartition(":")[2]) < 65536:
            raise ValueError("metrics.address needs a port from 1 to 65535")


class DashboardSettings(Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[dashboard]``: the web dashboard and HTTP API (``jobvisor dashboard``)."""

    bind: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.\-\[\]:]*:[0-9]{1,5}$")] = "127.0.0.1:9181"
    # name:role:hash lines (``jobvisor dashboard passwd``); empty: no sign-in, loopback only.
    users_file: str = ""
    read_only: bool = False  # everyone is a viewer, whatever their role
    refresh: Annotated[float, Meta(ge=0.5, le=60)] = 2.0  # seconds between live updates

    def __post_init__(self) -> None:
        if not 0 < int(self.bind.rpartition(":")[2]) < 65536:
            raise ValueError("dashboard.bind needs a port from 1 to 65535")


class HealthSettings(Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[health]``: what ``jobvisor health`` and ``/readyz`` hold the cluster to."""

    max_lag: Annotated[float, Meta(ge=0, le=86400 * 365)] = 0.0  # 0: off
    max_dead: Annotated[int, Meta(ge=0)] = 0  # 0: off
    redis_timeout: Annotated[float, Meta(gt=0, le=60)] = DEFAULT_REDIS_TIMEOUT


class Config(Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    redis: RedisSettings = RedisSettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    worker: WorkerSettings = WorkerSettings()
    defaults: JobDefaults = JobDefaults()
    metrics: MetricsSettings = MetricsSettings()
    dashboard: DashboardSettings = DashboardSettings()
    health: HealthSettings = HealthSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    # [[schedules]]: cron schedules every supervisor fires (jobs.schedules.Schedule).
    schedules: list[Schedule] = msgspec.field(default_factory=list)
    queue_limits: dict[QueueName, Limit] = msgspec.field(default_factory=dict)
    limits: dict[LimitName, Limit] = msgspec.field(default_factory=dict)

    def limit_definitions(self) -> dict[str, str | None]:
        """The queue and named limits in their stored form, keyed ``q:<queue>`` and
        ``n:<name>`` (jobs.limits)."""
        return {**{f"q:{queue}": limit.stored for queue, limit in self.queue_limits.items()},
                **{f"n:{name}": limit.stored for name, limit in self.limits.items()}}

    def __post_init__(self) -> None:
        empty = sorted(name for name, limit in self.limits.items() if limit.stored is None)
        if empty:
            raise ValueError(f"limits.{empty[0]} limits nothing: give it rate_limit and/or "
                             "max_concurrency, or remove the table")
        names = [s.name for s in self.schedules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"schedules: each name must be used once, {twice[0]!r} is not")
        if self.health.max_dead >= self.defaults.max_dead:
            raise ValueError(
                f"health.max_dead ({self.health.max_dead}) must be below defaults.max_dead "
                f"({self.defaults.max_dead}), the most dead jobs a queue keeps, or it can "
                "never be exceeded: lower health.max_dead (0: off)")

    def pool_size(self, limit: int = POOL_MAX) -> int:
        """The fixed pool size, or the starting size when autoscaling; ``workers = 0``
        (one per core) stays within ``limit``, the effective maximum."""
        s = self.supervisor
        if self.autoscale:
            return s.min_workers
        return s.workers or min(os.cpu_count() or 1, limit)

    @property
    def autoscale(self) -> bool:
        s = self.supervisor
        return 0 < s.min_workers < s.max_workers


def config_path(explicit: str | None) -> Path | None:
    """``--config``, else ``JOBVISOR_CONFIG``, else ``./config.toml`` when present."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("JOBVISOR_CONFIG")
    if env:
        return Path(env)
    local = Path("config.toml")
    return local if local.exists() else None


# The tables settable from the environment.
TABLES: dict[str, type[msgspec.Struct]] = {
    "redis": RedisSettings, "supervisor": SupervisorSettings, "worker": WorkerSettings,
    "defaults": JobDefaults, "metrics": MetricsSettings, "dashboard": DashboardSettings,
    "health": HealthSettings, "scheduler": SchedulerSettings}


def _settled(config: Config, data: dict[str, Any]) -> Config:
    """Fill in what follows from other tables: ``[worker] queues`` from ``[defaults]
    queue`` when not given, and each schedule's queue and zone when it sets none."""
    defaults = config.defaults
    worker = config.worker
    if "queues" not in data.get("worker", {}) and worker.queues != [defaults.queue]:
        worker = msgspec.structs.replace(worker, queues=[defaults.queue])
    schedules = [s.with_defaults(defaults.queue, config.scheduler.timezone)
                 for s in config.schedules]
    return msgspec.structs.replace(config, worker=worker, schedules=schedules)


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read, override from the environment, validate; raise ``ConfigError`` naming the key
    (or the environment variable) at fault."""
    try:
        data: dict[str, Any] = read_toml(path) if path is not None else {}
        for key in SECRETS:
            if key in data.get("redis", {}):
                raise ConfigError(
                    f"{path}: redis.{key} is not allowed in config.toml; set "
                    f"JOBVISOR_REDIS_{key.upper()} or redis.{key}_file"
                )
        sources = apply_overrides(data, TABLES)
    except ConfigurationError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return _settled(msgspec.convert(data, Config), data)
    except msgspec.ValidationError as exc:
        raise ConfigError(explain(exc, sources, path)) from None
