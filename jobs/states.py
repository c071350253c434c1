"""The states a job can be in, and the only moves between them."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    WAITING = "waiting"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    ACTIVE = "active"
    COMPLETED = "completed"
    DEAD = "dead"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.COMPLETED, JobState.DEAD, JobState.CANCELED})

# Mirrors the Lua scripts: each script moves a job along exactly one of these edges.
TRANSITIONS: dict[JobState | None, frozenset[JobState]] = {
    None: frozenset({JobState.QUEUED, JobState.SCHEDULED, JobState.WAITING}),
    JobState.WAITING: frozenset({JobState.QUEUED, JobState.SCHEDULED, JobState.CANCELED}),
    JobState.SCHEDULED: frozenset({JobState.QUEUED, JobState.CANCELED}),
    JobState.QUEUED: frozenset({JobState.ACTIVE, JobState.CANCELED}),
    JobState.ACTIVE: frozenset(
        {JobState.COMPLETED, JobState.SCHEDULED, JobState.QUEUED, JobState.DEAD, JobState.CANCELED}
    ),
    JobState.COMPLETED: frozenset(),
    JobState.DEAD: frozenset({JobState.QUEUED}),
    JobState.CANCELED: frozenset(),
}


def can_move(old: JobState | None, new: JobState) -> bool:
    return new in TRANSITIONS[old]
