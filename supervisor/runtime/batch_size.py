"""How many jobs a worker claims in one call.

More than one only while the jobs it runs are short (under ``short`` seconds,
``[worker] claim_batch_under_ms``): the size is what the recent run times say the worker
will start within twice that, at most ``claim_batch``. One job that runs longer brings
the size back to 1 at once; it grows again as short jobs follow.
"""

from __future__ import annotations

WEIGHT = 0.2  # of the newest run time in the running average


class BatchSize:
    __slots__ = ("average", "budget", "most", "short", "size")

    def __init__(self, most: int, short: float = 0.001) -> None:
        self.most = most
        self.short = short
        self.budget = 2 * short  # what a batch is expected to take, all its jobs run
        self.average = short  # no history yet: start at one job per claim
        self.size = 1

    def observe(self, seconds: float) -> int:
        """Take in one job's run time; returns the size of the next claim."""
        if self.most == 1:
            return 1
        if seconds >= self.short:
            self.average = seconds
            self.size = 1
            return 1
        average = self.average = self.average + WEIGHT * (seconds - self.average)
        if average >= self.short:
            self.size = 1
        else:
            self.size = max(1, min(self.most, int(self.budget / max(average, 1e-6))))
        return self.size
