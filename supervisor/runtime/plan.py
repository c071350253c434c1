"""What the pool is to be: the running configuration, how many workers are wanted, the
generation they are to belong to, and whether the supervisor is stopping.

Signal handlers and control messages (``commands``) change the plan; the loop
(``arbiter``) moves the children (``pool``) toward it. The two share this one object.
"""

from __future__ import annotations

from supervisor.config import Config
from supervisor.runtime.scaling import PoolLimit, pool_limit


class Plan:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.config_version = 1
        self.limit = pool_limit(config.supervisor)  # a ConfigError before anything starts
        self.target = config.pool_size(self.limit.workers)
        self.generation = 0  # children of an older one are replaced (rolling restart)
        self.stopping = False
        self.stop_deadline = 0.0  # monotonic: children still running then are killed
        self.ready = False  # READY=1 sent for the current generation

    def adopt(self, new: Config, limit: PoolLimit) -> None:
        """A reloaded configuration: a new generation, not ready until it is up."""
        self.config = new
        self.config_version += 1
        self.limit = limit
        if new.autoscale:  # keep the running size, within the new bounds
            s = new.supervisor
            self.target = max(s.min_workers, min(self.target, s.max_workers))
        else:
            self.target = new.pool_size(limit.workers)
        self.generation += 1
        self.ready = False  # READY=1 again once the new generation is up (manage)
