"""Parsing ``rate_limit="100/m"``, ``max_concurrency`` and ``burst`` into a limit's stored
form, and the names of named limits."""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

from jobs.errors import ConfigurationError
from jobs.store.keys import check_name

DECLARED = " declared"  # marks limits from @job or config.toml (vs. jobs.limits.set_limit)

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([a-z]+)\s*$")
_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60,
          "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
_MOST = 1_000_000


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
    if not 1 <= count <= _MOST or not 1 <= period <= 86400 * 1000 * 7:
        raise ConfigurationError(
            f"rate_limit {rate!r}: count must be 1..1000000 and the period 1 ms..7 days")
    return count, int(period)


def _check_count(label: str, value: int | None, most: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or not 1 <= value <= most):
        raise ConfigurationError(f"{label} must be an integer from 1 to {most}, got {value!r}")


def definition(rate_limit: str | None, max_concurrency: int | None,
               burst: int | None = None) -> str | None:
    """The stored form, ``"<count> <period ms> <most running> <burst>"``, or None for no
    limit. Burst 0 is the default sliding window: at most ``count`` starts in any window
    of the period; a burst is a token bucket of that size refilled at the rate."""
    _check_count("max_concurrency", max_concurrency, 100_000)
    _check_count("burst", burst, _MOST)
    if burst is not None and rate_limit is None:
        raise ConfigurationError(
            "burst needs a rate_limit: it is the size of the rate's token bucket")
    if rate_limit is None and max_concurrency is None:
        return None
    count, period = parse_rate(rate_limit) if rate_limit is not None else (0, 0)
    return f"{count} {period} {max_concurrency or 0} {burst or 0}"


class Definition(msgspec.Struct, frozen=True):
    """A stored definition read back (limits written before bursts existed have none)."""

    count: int  # 0: no rate limit
    period_ms: int
    most: int  # 0: no concurrency limit
    burst: int  # 0: sliding window
    declared: bool

    @property
    def rate(self) -> str:
        return f"{self.count}/{self.period_ms / 1000:g}s" if self.count else ""


def read_definition(raw: str) -> Definition:
    words = raw.split()
    numbers = [int(w) for w in words if w.isdigit()][:4]
    count, period, most, burst = numbers + [0] * (4 - len(numbers))
    return Definition(count, period, most, burst, raw.endswith(DECLARED))


def limit_names(value: str | Iterable[str] | None, where: str) -> tuple[str, ...]:
    """Named limits as given to ``@job(limits=...)`` or ``options(limits=...)``: one name
    or several, each a valid name, duplicates dropped."""
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if isinstance(names, bytes) or not isinstance(names, Iterable):
        raise ConfigurationError(
            f"{where}: limits takes a limit's name or a list of names, got {value!r}")
    return tuple(dict.fromkeys(check_name("limit name", n) for n in names))
