"""Every Redis key name, built in one place.

All keys of one queue share the hash tag ``{queue}`` so a queue can later live on
one Redis Cluster slot; job records are addressed by id alone so a job can be
looked up without knowing its queue.
"""

from __future__ import annotations

import re

from jobs.errors import ConfigurationError

_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


def check_name(kind: str, value: str) -> str:
    """Queue names, namespaces and job ids become key parts: allow a safe alphabet only."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigurationError(
            f"{kind} {value!r} is not valid: use 1-128 characters from A-Z a-z 0-9 _ . : -"
        )
    return value


class Keys:
    """``ns``: the namespace's name; ``root``: what every key starts with, the name itself
    or, on a Redis Cluster, the name as a hash tag (``{name}``), so that every key of the
    namespace lives in one hash slot and every script's keys are on one node."""

    __slots__ = ("ns", "root")

    def __init__(self, namespace: str, cluster: bool = False) -> None:
        self.ns = check_name("namespace", namespace)
        self.root = f"{{{namespace}}}" if cluster else namespace

    def job(self, job_id: str) -> str:
        return f"{self.root}:job:{job_id}"

    def _queue(self, queue: str, kind: str) -> str:
        return f"{self.root}:{{{queue}}}:{kind}"

    def queued(self, queue: str) -> str:
        return self._queue(queue, "queued")

    def scheduled(self, queue: str) -> str:
        return self._queue(queue, "scheduled")

    def active(self, queue: str) -> str:
        return self._queue(queue, "active")

    def completed(self, queue: str) -> str:
        return self._queue(queue, "completed")

    def dead(self, queue: str) -> str:
        return self._queue(queue, "dead")

    def canceled(self, queue: str) -> str:
        return self._queue(queue, "canceled")

    def wake(self, queue: str) -> str:
        return self._queue(queue, "wake")

    def state_index(self, queue: str, state: str) -> str:
        return self._queue(queue, state)

    def seq(self) -> str:
        return f"{self.root}:seq"

    def queues(self) -> str:
        return f"{self.root}:queues"

    def done(self, job_id: str) -> str:
        return f"{self.root}:done:{job_id}"

    def kids(self, job_id: str) -> str:
        """The ids of jobs waiting on ``job_id`` (built in Lua too: after_final)."""
        return f"{self.root}:kids:{job_id}"

    def batch(self, batch_id: str) -> str:
        return f"{self.root}:batch:{batch_id}"

    def batch_jobs(self, batch_id: str) -> str:
        return f"{self.root}:batch:{batch_id}:jobs"

    def batches(self) -> str:
        """Every batch id by creation time (µs), for listing them (trimmed in Lua too:
        after_final drops the ids whose record expired)."""
        return f"{self.root}:batches"

    def batches_ending(self) -> str:
        """Finished batches by when their record expires (ms): what trims ``batches``
        (built in Lua too: after_final)."""
        return f"{self.root}:batches:ending"

    def batch_done(self, batch_id: str) -> str:
        return f"{self.root}:done:batch:{batch_id}"

    def unique(self, digest: str) -> str:
        return f"{self.root}:unique:{digest}"

    def limits(self) -> str:
        """Limit definitions: ``fn:<function>`` / ``q:<queue>`` / ``n:<name>`` -> "count
        period_ms most burst"; ``fl:<function>`` -> the named limits it is under."""
        return f"{self.root}:limits"

    def held(self) -> str:
        """Per queue, how many queued jobs limits hold back."""
        return f"{self.root}:held"

    def limits_due(self) -> str:
        return f"{self.root}:limits:due"

    def limit(self, name: str) -> str:
        """The prefix of one limit's keys (``:starts``, ``:tat``, ``:active``, ``:held``)."""
        return f"{self.root}:limit:{name}"

    def limit_held(self, name: str) -> str:
        """The queued jobs limit ``name`` holds back, scored by their place in the queue."""
        return f"{self.limit(name)}:held"

    def cancels(self) -> str:
        """Running jobs someone asked to cancel; their supervisors kill them."""
        return f"{self.root}:cancels"

    def supervisor(self, ident: str) -> str:
        return f"{self.root}:supervisor:{ident}"

    def supervisors_pattern(self) -> str:
        return f"{self.root}:supervisor:*"

    def supervisor_ids(self) -> str:
        """Supervisors that publish an entry, scored by when (ms) one last did: listing
        them takes no SCAN, whose cost grows with the whole database."""
        return f"{self.root}:supervisors"

    def log(self, job_id: str) -> str:
        return f"{self.root}:log:{job_id}"

    def timers(self) -> str:
        return f"{self.root}:timers"

    def control(self, ident: str) -> str:
        return f"{self.root}:control:{ident}"

    def paused(self) -> str:
        return f"{self.root}:paused"

    def functions(self) -> str:
        """Registered functions -> their effective options, as the supervisors loaded them."""
        return f"{self.root}:functions"

    def events(self) -> str:
        return f"{self.root}:events"

    def totals(self) -> str:
        return f"{self.root}:totals"

    def enqueued(self) -> str:
        """Jobs created by enqueues, never reset: ``<queue>|<function>`` -> count."""
        return f"{self.root}:enqueued"

    def metric_functions(self) -> str:
        """The function names /metrics labels, scored by when a scrape first saw them."""
        return f"{self.root}:metrics:functions"

    def stats(self, minute: int) -> str:
        return f"{self.root}:stats:{minute}"

    def pattern_all(self) -> str:
        return f"{self.root}:*"
