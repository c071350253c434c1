"""What the pools are to be: the running configuration, each pool's settings and how many
workers it wants, which pools are paused, the generation the workers are to belong to,
and whether the supervisor is stopping.

Signal handlers and control messages (``commands``) change the plan; the loop
(``arbiter``) moves the children (``pool``) toward it. The two share this one object.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from jobs.cluster import DEFAULT_POOL
from supervisor.config import Config, PoolSpec
from supervisor.runtime.scaling import PoolLimit


class Plan:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.config_version = 1
        self.limit = config.limit()  # a ConfigError before anything starts
        self.pools: dict[str, PoolSpec] = config.pool_specs(self.limit.workers)
        self.targets = {name: spec.workers for name, spec in self.pools.items()}
        self.paused: set[str] = set()  # pools whose workers claim nothing
        self.generation = 0  # children of an older one are replaced (rolling restart)
        self.stopping = False
        self.stop_deadline = 0.0  # monotonic: children still running then are killed
        self.ready = False  # READY=1 sent for the current generation

    @property
    def target(self) -> int:
        """The workers wanted, all pools together."""
        return sum(self.targets.values())

    def room(self, pool: str) -> int:
        """The most workers ``pool`` may have: the maximum less what the others want."""
        return self.limit.workers - sum(n for name, n in self.targets.items() if name != pool)

    def least(self, pool: str) -> int:
        """The fewest workers ``pool`` may be scaled to: a pool may stop (0), except the
        default pool of a supervisor that has no other."""
        return 1 if pool == DEFAULT_POOL and len(self.pools) == 1 else 0

    def short_of(self, running: Counter[str]) -> bool:
        """Whether some pool runs fewer workers than it wants (``running``: per pool)."""
        return any(running[name] < n for name, n in self.targets.items())

    def published(self, running: Counter[str]) -> list[dict[str, Any]]:
        """Each pool for the registry entry: its queues, target, live workers, pause."""
        return [{"name": name, "queues": spec.queues, "weights": spec.weights,
                 "target": self.targets[name], "workers": running[name],
                 "paused": name in self.paused} for name, spec in self.pools.items()]

    def where(self) -> str:
        """The pools for the start line: ``on q1,q2`` when the default pool is alone."""
        if list(self.pools) == [DEFAULT_POOL]:
            return "on " + ",".join(self.pools[DEFAULT_POOL].queues)
        return "in pools " + ", ".join(f"{name} ({self.targets[name]} on {','.join(s.queues)})"
                                       for name, s in self.pools.items())

    def adopt(self, new: Config, limit: PoolLimit) -> None:
        """A reloaded configuration: a new generation, not ready until it is up. Sizes
        come from the file again (an autoscaled default pool keeps its size within the
        new bounds); pools that are still there stay paused."""
        before = self.targets.get(DEFAULT_POOL)
        self.config = new
        self.config_version += 1
        self.limit = limit
        self.pools = new.pool_specs(limit.workers)
        self.targets = {name: spec.workers for name, spec in self.pools.items()}
        if new.autoscale and before is not None and DEFAULT_POOL in self.targets:
            s = new.supervisor
            self.targets[DEFAULT_POOL] = max(s.min_workers,
                                             min(before, self.room(DEFAULT_POOL)))
        self.paused &= set(self.pools)
        self.generation += 1
        self.ready = False  # READY=1 again once the new generation is up (manage)
