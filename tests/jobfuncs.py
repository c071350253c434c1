"""Job functions used by the tests (imported by test processes and supervisors alike)."""

from __future__ import annotations

import os

import msgspec

from jobs import Backoff, Fail, Retry, job

CALLS: list[object] = []
NO_BACKOFF = Backoff(kind="fixed", base=0.0, jitter=0.0)


class Point(msgspec.Struct):
    x: int
    y: int


@job
def add(a: int, b: int) -> int:
    return a + b


@job(queue="other", priority="high")
def shout(text: str) -> str:
    return text.upper()


@job
def record(tag: str) -> str:
    CALLS.append(tag)
    return tag


@job
def norm(p: Point) -> int:
    return p.x * p.x + p.y * p.y


@job
def untyped(x, y=2):  # type: ignore[no-untyped-def]
    return [x, y]


@job(max_attempts=3, backoff=NO_BACKOFF)
def always_fails() -> None:
    raise ValueError("boom")


@job(max_attempts=1)
def spin_then_fail(seconds: float) -> None:
    """Busy for ``seconds`` of pure Python, then raises: a failure that takes a while."""
    from examples.cpu import spin

    spin(seconds)
    raise ValueError("failed after spinning")


@job(max_attempts=5, backoff=NO_BACKOFF, dont_retry_on=[KeyError])
def key_error() -> None:
    raise KeyError("missing")


@job(max_attempts=5, backoff=NO_BACKOFF, retry_on=[ConnectionError])
def only_conn(kind: str) -> None:
    if kind == "conn":
        raise ConnectionError("flaky")
    raise ValueError("bad")


@job(max_attempts=3)
def asks_retry() -> None:
    raise Retry(after=0.0)


@job(max_attempts=3)
def gives_up() -> None:
    raise Fail("cannot ever work")


@job
def unencodable() -> object:
    return object()


@job
def on_dead_hook(job_id: str) -> str:
    CALLS.append(("dead", job_id))
    return job_id


@job(max_attempts=1, on_dead=on_dead_hook)
def dies_with_hook() -> None:
    raise RuntimeError("fatal")


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


@job(max_attempts=1)
def raises_bad_str() -> None:
    raise BadStr()


@job
def exits() -> None:
    raise SystemExit(3)


@job(max_attempts=3, backoff=Backoff(kind="fixed", base=60, jitter=0))
def slow_retry() -> None:
    raise OSError("later")


@job(timeout=10, soft_timeout=0.5, max_attempts=1)
def soft_limited() -> str:
    """Spins until the soft timeout's JobTimeout, then cleans up and returns."""
    from jobs import JobTimeout

    try:
        while True:
            pass
    except JobTimeout:
        return "cleaned up"


@job(timeout=60, soft_timeout=0.2, max_attempts=1)
def overruns(seconds: float) -> str:
    """Catches its soft timeout's JobTimeout and goes on for ``seconds`` more."""
    import time

    from jobs import JobTimeout

    try:
        while True:
            time.sleep(0.01)
    except JobTimeout:
        time.sleep(seconds)
    return "late"


@job(max_attempts=1)
def catastrophic_regex() -> None:
    """Holds the GIL inside the regex engine (C code) for minutes: the heartbeat stops."""
    import re

    re.match(r"(a+)+$", "a" * 34 + "b")


@job(max_attempts=1)
def segfault() -> None:
    import ctypes

    ctypes.string_at(0)


@job(max_attempts=1)
def allocate(mib: int) -> int:
    block = bytearray(mib * 1024 * 1024)
    return len(block)


_LEAK: list[bytearray] = []


@job
def leak(mib: int) -> int:
    """Keeps memory alive in the worker (a leak), to exercise recycling by RSS."""
    import os

    _LEAK.append(bytearray(b"x" * (mib * 1024 * 1024)))
    return os.getpid()


@job
def worker_pid() -> int:
    import os

    return os.getpid()


def append_line(path: str, line: str) -> None:
    """One O_APPEND write: lines from concurrent workers never interleave or overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@job(max_attempts=5)
def ledger(path: str, tag: str, seconds: float = 0.0) -> str:
    """Appends ``tag`` to a file (one O_APPEND write per run), after ``seconds`` of CPU."""
    import time

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    append_line(path, tag)
    return tag


@job(max_attempts=1)
def cyclic() -> list[object]:
    a: list[object] = []
    a.append(a)
    return a


@job(max_attempts=2)
def retry_forever() -> None:
    raise Retry(after=float("inf"))


@job
def reports_progress(ctx, steps: int) -> int:  # type: ignore[no-untyped-def]
    """Declares ``ctx``: progress for every step (throttled), a log line, its attempt."""
    from jobs import current

    assert current() is ctx
    for i in range(1, steps + 1):
        ctx.progress(i, steps, f"step {i}")
    ctx.log(f"attempt {ctx.attempt} of {ctx.max_attempts}")
    return steps


@job
def batch_callback(path: str, batch_id: str) -> str:
    """Appends ``batch_id`` to a file: a callback that ran twice would show two lines."""
    append_line(path, batch_id)
    return batch_id


@job(unique_for=60)
def unique_report(day: str) -> str:
    return day


@job(rate_limit="5/s")
def rate_limited(tag: str) -> float:
    import time

    return time.time()


@job(max_concurrency=2)
def capped(counter_url: str, key: str, seconds: float) -> int:
    """Counts how many run at once in a shared Redis counter and logs each count seen."""
    import time

    import redis

    client = redis.Redis.from_url(counter_url)
    running = int(client.incr(key))
    client.rpush(f"{key}:seen", running)
    time.sleep(seconds)
    client.decr(key)
    client.close()
    return running


@job(max_attempts=1)
def prints_a_lot(mib: int) -> int:
    import sys

    line = "x" * 1023 + "\n"
    for _ in range(mib * 1024):
        sys.stdout.write(line)
    sys.stdout.flush()
    return mib


@job(max_attempts=1)
def forks_and_returns() -> int:
    """The forked copy returns from the function too, as careless code would."""
    import os

    os.fork()
    return 1


@job(max_attempts=1)
def ignores_sigterm() -> str:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    return "changed"


@job(max_attempts=1)
def hard_exit() -> None:
    import os

    os._exit(7)


class FlakyError(ConnectionError):
    """A failure retry rules can name by its own name, its module's, or a base class's."""


SLOW_BACKOFF = Backoff(kind="fixed", base=60.0, jitter=0.0)


@job(max_attempts=5, backoff=SLOW_BACKOFF, retry_on=[ConnectionError])
def flaky(kind: str, seconds: float = 0.0) -> str:
    """Fails as ``kind`` says (after ``seconds`` of CPU); its own policy retries only
    connection errors, a minute apart."""
    from examples.cpu import spin

    spin(seconds)
    if kind == "flaky":
        raise FlakyError("try again")
    if kind == "value":
        raise ValueError("bad input")
    return kind


def big_enough_to_queue(n: int) -> bool:
    return n >= 100


@job(should_queue=big_enough_to_queue)
def sized(n: int) -> int:
    """Small inputs run at once where they are enqueued; large ones go to a worker."""
    CALLS.append(("sized", n))
    return n * 2


@job
def enqueues_from_threads(n: int) -> list[str]:
    """Enqueues ``n`` jobs from ``n`` threads at once, through the worker's own client:
    job code that uses the queue concurrently. Returns their ids."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n) as pool:
        return [j.id for j in pool.map(lambda i: add.enqueue(i, 1), range(n))]
