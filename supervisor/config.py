"""config.toml as one typed msgspec schema; ``load_config`` is the only reader."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from jobs.cluster import DEFAULT_POOL
from jobs.encryption.keyring import KEYS_VARIABLE, load_keyring
from jobs.environment import apply_overrides, explain, read_toml, refuse_keys_in_file
from jobs.errors import ConfigurationError
from jobs.health import DEFAULT_REDIS_TIMEOUT
from jobs.rates import definition
from jobs.schedules import Schedule
from jobs.settings import (
    EncryptionSettings,
    JobDefaults,
    RedisSettings,
    SchedulerSettings,
    Table,
)
from supervisor.errors import ConfigError
from supervisor.runtime.scaling import POOL_MAX, Machine, PoolLimit, pool_limit

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
ClaimBatch = Annotated[int, Meta(ge=1, le=64)]
LimitName = QueueName  # the same alphabet: both become parts of key names


class WorkerSettings(Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[worker]``; ``queues`` left out is ``[defaults] queue`` alone (``load_config``).
    The queues and weights are the default pool's; ``[]`` runs no default pool (allowed
    only beside ``[[pools]]``, checked by ``Config``)."""

    modules: list[str] = msgspec.field(default_factory=lambda: ["examples.cpu"])
    # Directories put first on the import path (relative ones: to the working directory).
    path: list[str] = msgspec.field(default_factory=lambda: ["."])
    queues: list[QueueName] = msgspec.field(default_factory=lambda: ["default"])
    weights: list[Annotated[float, Meta(gt=0)]] = msgspec.field(default_factory=list)
    # One INFO line per job start and end (id, function, duration, outcome) from the worker.
    log_jobs: bool = False
    # The most jobs a worker claims in one call while its jobs run under
    # claim_batch_under_ms (supervisor.runtime.batch_size); 1: one job per claim, always.
    claim_batch: ClaimBatch = 16
    claim_batch_under_ms: Annotated[float, Meta(gt=0, le=600_000)] = 1.0
    # Claim a function's next job 2 ms before the current one is expected to end, once
    # its run times are steady (supervisor.runtime.ahead).
    claim_ahead: bool = True

    def __post_init__(self) -> None:
        if self.weights and len(self.weights) != len(self.queues):
            raise ValueError("weights must give one number per queue (or be empty: strict order)")


NonNegative = Annotated[int, Meta(ge=0)]
Grace = Annotated[float, Meta(ge=0, le=60)]


class PoolSettings(Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[[pools]]``: workers of their own on queues of their own, in the same supervisor.
    A limit left out is ``[supervisor]``'s."""

    name: QueueName
    queues: Annotated[list[QueueName], Meta(min_length=1)]
    weights: list[Annotated[float, Meta(gt=0)]] = msgspec.field(default_factory=list)
    workers: Count = 1  # 0: declared but stopped until `jobvisor scale --pool`
    max_jobs_per_child: NonNegative | None = None
    max_memory_per_child: NonNegative | None = None
    job_memory_limit: NonNegative | None = None
    heartbeat_timeout: Seconds | None = None
    kill_grace: Grace | None = None
    log_jobs: bool | None = None
    claim_batch: ClaimBatch | None = None
    claim_batch_under_ms: Annotated[float, Meta(gt=0, le=600_000)] | None = None
    claim_ahead: bool | None = None

    def __post_init__(self) -> None:
        if self.name == DEFAULT_POOL:
            raise ValueError(f"pool name {DEFAULT_POOL!r} is taken by the default pool "
                             "([worker] queues, [supervisor] workers): pick another name")
        if self.weights and len(self.weights) != len(self.queues):
            raise ValueError(f"pool {self.name!r}: weights must give one number per queue "
                             "(or be empty: strict order)")


class PoolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A pool as its workers run it, every limit filled in: the default pool from
    ``[worker]`` and ``[supervisor]``, a ``[[pools]]`` entry over them."""

    name: str
    queues: list[str]
    weights: list[float]
    workers: int  # the size the configuration asks for
    max_jobs_per_child: int
    max_memory_per_child: int
    job_memory_limit: int
    heartbeat_timeout: float
    kill_grace: float
    log_jobs: bool
    claim_batch: int
    claim_batch_under_ms: float
    claim_ahead: bool


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
    encryption: EncryptionSettings = EncryptionSettings()
    # [[schedules]]: cron schedules every supervisor fires (jobs.schedules.Schedule).
    schedules: list[Schedule] = msgspec.field(default_factory=list)
    queue_limits: dict[QueueName, Limit] = msgspec.field(default_factory=dict)
    limits: dict[LimitName, Limit] = msgspec.field(default_factory=dict)
    # [[pools]]: named pools beside the default one (PoolSettings).
    pools: list[PoolSettings] = msgspec.field(default_factory=list)

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
        self._check_pools()

    def _check_pools(self) -> None:
        """Cross-table rules of the pools: names, the default pool, the total size."""
        names = [p.name for p in self.pools]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"pools: each name must be used once, {twice[0]!r} is not")
        if not self.worker.queues:
            if not self.pools:
                raise ValueError("`$.worker.queues` is empty: list the queues the workers claim "
                                 "from ([] runs no default pool, for a supervisor of "
                                 "[[pools]] only)")
            if self.autoscale:
                raise ValueError("`$.supervisor.min_workers` and max_workers autoscale the "
                                 "default pool, which `$.worker.queues` = [] turns off: give "
                                 "worker.queues, or set min_workers = 0")
        s = self.supervisor
        pooled = self.pooled_workers
        if not (s.max_workers and pooled):
            return
        own = (s.min_workers if self.autoscale else s.workers) if self.worker.queues else 0
        if own + pooled > s.max_workers:
            raise ValueError(
                f"the pools ask for {own + pooled} workers ({own} in the default pool, "
                f"{pooled} in [[pools]]), more than supervisor.max_workers "
                f"({s.max_workers}), the most this supervisor runs: raise "
                "supervisor.max_workers or lower the pools' workers")
        if self.worker.queues and not own and pooled >= s.max_workers:
            raise ValueError(
                f"[[pools]] take all {s.max_workers} workers of supervisor.max_workers, "
                "leaving none for the default pool (supervisor.workers = 0: one per core "
                "within what is left): raise supervisor.max_workers, set supervisor.workers, "
                "or set worker.queues = [] to run no default pool")

    @property
    def pooled_workers(self) -> int:
        """The workers ``[[pools]]`` ask for, all together."""
        return sum(p.workers for p in self.pools)

    @property
    def queues(self) -> list[str]:
        """Every queue some pool of this supervisor claims from, each once."""
        out = list(self.worker.queues)
        for p in self.pools:
            out += [q for q in p.queues if q not in out]
        return out

    def limit(self, m: Machine | None = None) -> PoolLimit:
        """The most workers this supervisor runs, all pools together; a ``ConfigError``
        when the pools ask for more than the host allows."""
        return pool_limit(self.supervisor, m, pooled=self.pooled_workers,
                          default_pool=bool(self.worker.queues))

    def pool_size(self, limit: int = POOL_MAX) -> int:
        """The default pool's fixed size, or its starting size when autoscaling;
        ``workers = 0`` (one per core) stays within what ``limit``, the effective
        maximum, leaves beside ``[[pools]]``."""
        s = self.supervisor
        if not self.worker.queues:
            return 0
        if self.autoscale:
            return s.min_workers
        return s.workers or max(0, min(os.cpu_count() or 1, limit - self.pooled_workers))

    @property
    def autoscale(self) -> bool:
        s = self.supervisor
        return 0 < s.min_workers < s.max_workers

    def pool_specs(self, limit: int = POOL_MAX) -> dict[str, PoolSpec]:
        """Every pool by name, the default pool (when it has queues) first."""
        s, w = self.supervisor, self.worker
        default = PoolSpec(
            name=DEFAULT_POOL, queues=list(w.queues), weights=list(w.weights),
            workers=self.pool_size(limit), max_jobs_per_child=s.max_jobs_per_child,
            max_memory_per_child=s.max_memory_per_child, job_memory_limit=s.job_memory_limit,
            heartbeat_timeout=s.heartbeat_timeout, kill_grace=s.kill_grace,
            log_jobs=w.log_jobs, claim_batch=w.claim_batch,
            claim_batch_under_ms=w.claim_batch_under_ms, claim_ahead=w.claim_ahead)
        out = {DEFAULT_POOL: default} if w.queues else {}
        for p in self.pools:
            out[p.name] = msgspec.structs.replace(
                default, name=p.name, queues=list(p.queues), weights=list(p.weights),
                workers=p.workers, **{k: v for k, v in _overrides(p).items() if v is not None})
        return out


OVERRIDES = ("max_jobs_per_child", "max_memory_per_child", "job_memory_limit",
             "heartbeat_timeout", "kill_grace", "log_jobs", "claim_batch",
             "claim_batch_under_ms", "claim_ahead")


def _overrides(p: PoolSettings) -> dict[str, Any]:
    """The limits a ``[[pools]]`` entry sets for its own workers (None: ``[supervisor]``'s)."""
    return {k: getattr(p, k) for k in OVERRIDES}


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
    "health": HealthSettings, "scheduler": SchedulerSettings,
    "encryption": EncryptionSettings}


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
        refuse_keys_in_file(data, path)
        sources = apply_overrides(data, TABLES)
    except ConfigurationError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return _settled(msgspec.convert(data, Config), data)
    except msgspec.ValidationError as exc:
        raise ConfigError(explain(exc, sources, path)) from None


def check_encryption(config: Config) -> str:
    """Read the encryption keys as workers will, so a bad key file or key stops a start
    or a reload (with the reason) instead of failing jobs; what was found, for the log."""
    settings = config.encryption
    try:
        keyring = load_keyring(settings)
        if keyring.keys:
            keyring.active.cipher  # noqa: B018  (the cryptography package is there)
    except ConfigurationError as exc:
        raise ConfigError(str(exc)) from None
    if settings.encrypt_all and not keyring.keys:
        raise ConfigError(
            f"encryption.encrypt_all is true but no key is configured: set {KEYS_VARIABLE} "
            "or encryption.key_file (make a key with `jobvisor encryption keygen`)")
    if not keyring.keys:
        return ""
    return (f"encryption keys {', '.join(keyring.ids)} from {keyring.source} "
            f"(active: {keyring.active.id})")
