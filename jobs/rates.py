"""Parsing ``rate_limit="100/m"`` and ``max_concurrency`` into a limit's stored form."""

from __future__ import annotations

import re

from jobs.errors import ConfigurationError

DECLARED = " declared"  # marks limits from @job or config.toml (vs. jobs.limits.set_limit)

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([a-z]+)\s*$")
_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60,
          "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"100/m"`` or ``"5/10s"`` -> (count, period in ms)."""
    match = _RATE.match(rate) if isinstance(rate, str) else None
    unit = match and _UNITS.get(match.group(3).rstrip("s") if match.group(3) not in _UNITS
                                else match.group(3))
    if not match or not unit:
        raise ConfigurationError(
            f"rate_limit {rate!r} is not valid: use '<count>/<period>' such as '100/m', "
            "'10/s', '5/10s' or '1000/h' (units s, m, h, d)")
    count = int(match.group(1))
    period = (float(match.group(2)) if match.group(2) else 1.0) * unit * 1000
    if not 1 <= count <= 1_000_000 or not 1 <= period <= 86400 * 1000 * 7:
        raise ConfigurationError(
            f"rate_limit {rate!r}: count must be 1..1000000 and the period 1 ms..7 days")
    return count, int(period)


def definition(rate_limit: str | None, max_concurrency: int | None) -> str | None:
    """The stored form, ``"<count> <period ms> <most running>"``, or None for no limit."""
    if max_concurrency is not None and (isinstance(max_concurrency, bool)
                                        or not isinstance(max_concurrency, int)
                                        or not 1 <= max_concurrency <= 100_000):
        raise ConfigurationError(
            f"max_concurrency must be an integer from 1 to 100000, got {max_concurrency!r}")
    if rate_limit is None and max_concurrency is None:
        return None
    count, period = parse_rate(rate_limit) if rate_limit is not None else (0, 0)
    return f"{count} {period} {max_concurrency or 0}"
