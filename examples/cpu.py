"""Example CPU-bound jobs used by the demo and the benchmarks: real work in pure Python."""

from __future__ import annotations

import hashlib
import os
import time

from jobs import Backoff, job


@job
def count_primes(limit: int) -> int:
    """Count primes below ``limit`` with a sieve."""
    if limit < 3:
        return 0
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\0\0"
    for i in range(2, int(limit**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(range(i * i, limit, i)))
    return sum(sieve)


@job
def hash_chain(rounds: int, seed: str = "jobvisor") -> str:
    """Hash a value ``rounds`` times: CPU work with a verifiable answer."""
    digest = seed.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@job
def mandelbrot(width: int, height: int, max_iter: int = 50) -> int:
    """Points of a width x height grid inside the Mandelbrot set (an image-like kernel)."""
    inside = 0
    for py in range(height):
        for px in range(width):
            c = complex(3.0 * px / width - 2.0, 2.0 * py / height - 1.0)
            z = 0j
            for _ in range(max_iter):
                z = z * z + c
                if abs(z) > 2.0:
                    break
            else:
                inside += 1
    return inside


@job
def noop() -> None:
    """Does nothing: measures the job system's own cost."""


@job
def spin(seconds: float) -> float:
    """Burn CPU in pure Python for ``seconds``."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return seconds


@job(timeout=1.0, max_attempts=1)
def runaway() -> None:
    """An endless loop: the supervisor kills it at its 1 s hard timeout."""
    while True:
        pass


@job(max_attempts=3, backoff=Backoff(kind="fixed", base=0.5, jitter=0.0))
def flaky(fail_times: int, key: str) -> str:
    """Fails its first ``fail_times`` attempts (counted in a file), then succeeds."""
    marker = f"/tmp/jobvisor-flaky-{os.getuid()}-{key}"
    tries = int(open(marker).read()) if os.path.exists(marker) else 0
    with open(marker, "w") as f:
        f.write(str(tries + 1))
    if tries < fail_times:
        raise RuntimeError(f"transient failure {tries + 1} of {fail_times}")
    os.unlink(marker)
    return f"succeeded after {tries + 1} attempts"


@job(max_attempts=2, backoff=Backoff(kind="fixed", base=0.2, jitter=0.0))
def crash() -> None:
    """Kills its own worker process: the supervisor accounts the job and replaces the worker."""
    os._exit(70)
