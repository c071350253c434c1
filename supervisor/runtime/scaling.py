"""Pool size rules: the most workers one supervisor runs, and autoscaling decisions as
pure functions, so the rules are easy to read and test."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import psutil

from supervisor.errors import ConfigError

if TYPE_CHECKING:
    from supervisor.config import SupervisorSettings

POOL_MAX = 1024  # the hard ceiling: config allows 0..1024 and the slots are sized for it
PER_CORE = 4  # CPU-bound workers beyond a few per core only wait for a CPU
WORKER_MEMORY = 256 * 2**20  # the memory budget assumed per worker: interpreter plus job
_MiB, _GiB = 2**20, 2**30


class Machine(msgspec.Struct, frozen=True, kw_only=True):
    """What the derived maximum is computed from."""

    cores: int
    memory: int  # bytes: physical memory, or the cgroup's limit when lower
    memory_from: str = "RAM"  # "RAM" or "cgroup limit"


class PoolLimit(msgspec.Struct, frozen=True, kw_only=True):
    """The effective ``max_workers`` and where it comes from (for logs and refusals)."""

    workers: int
    configured: bool
    origin: str  # "supervisor.max_workers", or how the figure was derived

    def describe(self) -> str:
        return f"at most {self.workers} workers ({self.origin})"


def _cgroup_memory_limit() -> int | None:
    """This process's cgroup memory limit (v2 ``memory.max``, v1 ``limit_in_bytes``)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    candidates = [Path("/sys/fs/cgroup/memory.max"),
                  Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")]
    for line in lines:
        controllers, _, rel = line.partition(":")[2].partition(":")  # "id:controllers:path"
        rel = rel.lstrip("/")
        if controllers == "":
            candidates.insert(0, Path("/sys/fs/cgroup", rel, "memory.max"))
        elif "memory" in controllers.split(","):
            candidates.insert(0, Path("/sys/fs/cgroup/memory", rel, "memory.limit_in_bytes"))
    limits = []
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else None


@functools.cache
def machine() -> Machine:
    """Read once per process: the derived maximum must not drift while it runs."""
    cores = os.cpu_count() or 1
    ram = psutil.virtual_memory().total
    limit = _cgroup_memory_limit()
    if limit is not None and limit < ram:
        return Machine(cores=cores, memory=limit, memory_from="cgroup limit")
    return Machine(cores=cores, memory=ram)


def derived_limit(m: Machine) -> PoolLimit:
    """``min(PER_CORE x cores, memory / WORKER_MEMORY)``, at least 1, at most POOL_MAX.

    Total memory, not what is free at the moment: the figure then does not change from
    one start to the next with whatever else the host happens to run.
    """
    by_cores = PER_CORE * m.cores
    by_memory = m.memory // WORKER_MEMORY
    workers = max(1, min(by_cores, by_memory, POOL_MAX))
    origin = (f"derived from {m.cores} cores x {PER_CORE} = {by_cores} and "
              f"{m.memory / _GiB:.1f} GiB {m.memory_from} / {WORKER_MEMORY // _MiB} MiB "
              f"per worker = {by_memory}")
    if workers == POOL_MAX:
        origin += f", hard limit {POOL_MAX}"
    return PoolLimit(workers=workers, configured=False, origin=origin)


def pool_limit(s: SupervisorSettings, m: Machine | None = None, pooled: int = 0,
               default_pool: bool = True) -> PoolLimit:
    """The effective maximum, all pools together; more workers than a derived one allows
    is an error (``pooled``: what ``[[pools]]`` ask for; ``default_pool``: whether
    ``[worker] queues`` runs one).

    The schema checks the sizes against a configured ``max_workers`` (``min_workers``
    needs one), so only the machine-dependent check is left here: it runs where the pool
    runs, not in a CLI that reads the same file on another host.
    """
    if s.max_workers:
        return PoolLimit(workers=s.max_workers, configured=True, origin="supervisor.max_workers")
    limit = derived_limit(m or machine())
    own = s.workers if default_pool else 0
    how = (f"set supervisor.max_workers (up to {POOL_MAX}) to allow more, or lower "
           "supervisor.workers")
    if own + pooled > limit.workers and not pooled:
        raise ConfigError(
            f"supervisor.workers = {s.workers} is above the {limit.workers} workers this host "
            f"allows ({limit.origin}): {how}")
    if own + pooled > limit.workers:
        raise ConfigError(
            f"supervisor.workers = {own} and the {pooled} workers of [[pools]] "
            f"({own + pooled} in all) are above the {limit.workers} workers this host allows "
            f"({limit.origin}): {how} or the pools' workers")
    if default_pool and not own and pooled >= limit.workers:
        raise ConfigError(
            f"the {pooled} workers of [[pools]] take all {limit.workers} workers this host "
            f"allows ({limit.origin}), leaving none for the default pool (supervisor.workers "
            "= 0: one per core within what is left): set supervisor.max_workers or "
            "supervisor.workers, lower the pools' workers, or set worker.queues = [] to run "
            "no default pool")
    return limit


def autoscale_step(target: int, low: int, high: int, backlog: int, idle_for: list[float],
                   idle_timeout: float) -> tuple[int, str]:
    """The next target and why ("" when unchanged).

    Grow by one while jobs wait and no worker is idle; shrink by one when a worker has
    been idle longer than ``idle_timeout``; always stay within ``low..high``.
    """
    if target < low:
        return low, f"below min_workers: growing to {low}"
    if target > high:
        return high, f"above max_workers: shrinking to {high}"
    if backlog > 0 and not idle_for and target < high:
        return target + 1, f"{backlog} jobs waiting and no idle worker: growing to {target + 1}"
    if backlog == 0 and target > low and any(t > idle_timeout for t in idle_for):
        return target - 1, (f"a worker idle for over {idle_timeout:g} s: "
                            f"shrinking to {target - 1}")
    return target, ""
