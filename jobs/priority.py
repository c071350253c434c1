"""Priorities: integers 0..1000, higher runs first, with four named levels."""

from __future__ import annotations

from enum import IntEnum

from jobs.errors import ConfigurationError

MIN_PRIORITY = 0
MAX_PRIORITY = 1000
PRIORITY_BAND = 2**42  # as in _lib.lua: sequence numbers per priority level


class Priority(IntEnum):
    LOW = 0
    NORMAL = 10
    HIGH = 20
    CRITICAL = 30


def parse_priority(value: int | str) -> int:
    """Accept a level name (any case) or an integer in range; reject anything else clearly."""
    if isinstance(value, str):
        name = value.strip().upper()
        if name in Priority.__members__:
            return int(Priority[name])
        try:
            value = int(value)
        except ValueError:
            names = ", ".join(p.name for p in Priority)
            raise ConfigurationError(
                f"priority {value!r} is neither a level ({names}) nor an integer"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"priority must be an integer, got {type(value).__name__}")
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise ConfigurationError(
            f"priority {value} is out of range: use {MIN_PRIORITY}..{MAX_PRIORITY}"
        )
    return int(value)
