"""The physical limit, measured in the same run: bare redis-py loops with no job logic."""

from __future__ import annotations

import multiprocessing as mp
import time

import redis

CLAIM = "local id = redis.call('ZPOPMIN', KEYS[1]) if id[1] then redis.call('ZADD', KEYS[2], 1, id[1]) end return id[1]"  # noqa: E501
DONE = "redis.call('ZREM', KEYS[2], ARGV[1]) redis.call('HSET', KEYS[3], ARGV[1], 1) return 1"
BOTH = ("if ARGV[1] ~= '' then redis.call('ZREM', KEYS[2], ARGV[1]) "
        "redis.call('HSET', KEYS[3], ARGV[1], 1) end " + CLAIM)


def _connection(socket: str) -> object:
    return redis.Redis(unix_socket_path=socket).connection_pool.make_connection()


def _call(conn: object, *args: object) -> object:
    conn.send_command(*args)  # type: ignore[attr-defined]
    return conn.read_response()  # type: ignore[attr-defined]


def ping_rate(socket: str, n: int) -> float:
    conn = _connection(socket)
    start = time.perf_counter()
    for _ in range(n):
        _call(conn, "PING")
    return n / (time.perf_counter() - start)


def _drain(socket: str, prefix: str, one_trip: bool, out: mp.Queue) -> None:
    r = redis.Redis(unix_socket_path=socket)
    claim, done, both = (r.script_load(s) for s in (CLAIM, DONE, BOTH))
    conn = _connection(socket)
    keys = (f"{prefix}:q", f"{prefix}:a", f"{prefix}:r")
    n = 0
    start = time.perf_counter()
    if one_trip:
        last = b""
        while True:
            last = _call(conn, "EVALSHA", both, 3, *keys, last or "")  # type: ignore[assignment]
            if last is None:
                break
            n += 1
    else:
        while (job := _call(conn, "EVALSHA", claim, 3, *keys)) is not None:
            _call(conn, "EVALSHA", done, 3, *keys, job)
            n += 1
    out.put((n, time.perf_counter() - start))


def drain_rate(socket: str, jobs: int, one_trip: bool, processes: int = 2) -> float:
    """Jobs/s for ``processes`` bare loops draining ``jobs`` ids (a reliable queue: every
    id moves to an in-flight set and is then acknowledged)."""
    r = redis.Redis(unix_socket_path=socket)
    prefix = f"ceiling{time.monotonic_ns()}"
    pipe = r.pipeline(transaction=False)
    for i in range(0, jobs, 1000):
        pipe.zadd(f"{prefix}:q", {str(j): j for j in range(i, min(jobs, i + 1000))})
    pipe.execute()
    out: mp.Queue = mp.Queue()
    ps = [mp.Process(target=_drain, args=(socket, prefix, one_trip, out)) for _ in range(processes)]
    start = time.perf_counter()
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    elapsed = time.perf_counter() - start
    r.delete(*(f"{prefix}:{k}" for k in "qar"))
    return jobs / elapsed


def pipelined_write_rate(socket: str, jobs: int) -> float:
    """Raw pipelined writes shaped like an enqueue (a hash and a sorted-set entry per job)."""
    r = redis.Redis(unix_socket_path=socket)
    prefix = f"raw{time.monotonic_ns()}"
    start = time.perf_counter()
    for i in range(0, jobs, 1000):
        pipe = r.pipeline(transaction=False)
        for j in range(i, min(jobs, i + 1000)):
            pipe.hset(f"{prefix}:{j}", mapping={"spec": b"\x97\xb1examples.cpu:noop", "st": "q"})
            pipe.zadd(f"{prefix}:q", {str(j): j})
        pipe.execute()
    rate = jobs / (time.perf_counter() - start)
    keys = list(r.scan_iter(match=f"{prefix}:*", count=10_000))
    for i in range(0, len(keys), 10_000):
        r.delete(*keys[i:i + 10_000])
    return rate
