"""Jobs used only by the benchmarks."""

from __future__ import annotations

import re

from jobs import job


@job(max_attempts=1)
def forever() -> None:
    """A pure-Python loop that never ends: the hard timeout must kill it."""
    while True:
        pass


@job(max_attempts=1)
def gil_forever() -> None:
    """Catastrophic backtracking: C code holding the GIL for minutes."""
    re.match(r"(a+)+$", "a" * 40 + "b")


@job
def stamp() -> float:
    """The worker's wall clock when the job started (same host as the producer)."""
    import time

    return time.time()


@job(max_attempts=2)
def sleeper(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


@job(max_attempts=1)
def fails(message: str) -> None:
    """Dies at its first attempt: a real dead record to check synthetic ones against."""
    raise ValueError(message)


@job
def echo(payload: dict[str, object]) -> dict[str, object]:
    """Returns its argument: a result as large as the arguments (bench.encryption)."""
    return payload
