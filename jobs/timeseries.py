"""How statistics are dated and bucketed: minute keys and duration histogram bounds."""

from __future__ import annotations

import time
from bisect import bisect_left

# Upper bounds (seconds) of the duration histogram, as Prometheus buckets.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
           300.0, 600.0, 1800.0, 3600.0)


_LABELS = (*(f"{bound:g}" for bound in BUCKETS), "+Inf")


def bucket(duration: float) -> str:
    """The histogram bucket label a duration falls in (``+Inf`` past the last bound)."""
    return _LABELS[bisect_left(BUCKETS, duration)]


def minute(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // 60)
