"""``python -m bench.encryption``: what payload encryption costs per job, measured.

One function (``bench.jobs:echo``, which returns its argument) with a 100-byte argument,
N jobs enqueued one by one and run by an in-process worker, plain and encrypted
(``options(encrypt=True)``: the same function and payload), alternately, each mode
``--repeats`` times on its own server namespace; medians are printed:

- bytes: the stored spec and result per job (HSTRLEN), and the server memory of a job's
  record (``MEMORY USAGE``) when queued and when completed, averaged over 200 jobs;
- time per job: enqueue (one round trip each), run (claim, execute, write the outcome),
  wall clock (``_us``) and this process's CPU (``_cpu_us``: what encryption adds, less
  disturbed by other load on the host), and sealing or opening one 100-byte value alone.

    python -m bench.encryption [--jobs 5000] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

from bench import jobs as bench_jobs
from bench.env import Bench, clocked, write_json
from jobs import Broker, Job, Worker
from jobs.encryption.keyring import KEYS_VARIABLE, new_key
from jobs.encryption.sealer import Sealer
from jobs.store.broker import connect

PAYLOAD: dict[str, object] = {"user": "alice@example.com", "account": 4242424242,
                              "items": [17, 23, 42], "note": "n" * 38}


def one_run(broker: Broker, n: int, encrypt: bool) -> dict[str, float]:
    fn = bench_jobs.echo.options(encrypt=True) if encrypt else bench_jobs.echo.options()
    client = broker.client
    handles: list[Job]
    handles, enqueued, enqueue_cpu = clocked(lambda: [fn.enqueue(PAYLOAD) for _ in range(n)])
    sample = [broker.keys.job(j.id) for j in handles[:200]]
    spec = statistics.mean(client.hstrlen(k, "spec") for k in sample)
    queued = statistics.mean(client.memory_usage(k, samples=0) for k in sample)
    done, ran, run_cpu = clocked(Worker(broker=broker).run_until_empty)
    assert done == {"completed": n}, done
    result = statistics.mean(client.hstrlen(k, "res") for k in sample)
    completed = statistics.mean(client.memory_usage(k, samples=0) for k in sample)
    assert handles[-1].result(timeout=1) == PAYLOAD
    return {"spec_bytes": spec, "result_bytes": result, "queued_record_bytes": queued,
            "completed_record_bytes": completed, "enqueue_us": enqueued / n * 1e6,
            "run_us": ran / n * 1e6, "total_us": (enqueued + ran) / n * 1e6,
            "enqueue_cpu_us": enqueue_cpu / n * 1e6, "run_cpu_us": run_cpu / n * 1e6,
            "total_cpu_us": (enqueue_cpu + run_cpu) / n * 1e6}


def crypto_alone(n: int = 20_000) -> dict[str, float]:
    """Sealing and opening one 100-byte value, without Redis."""
    sealer = Sealer()
    value = b"x" * 100

    def open_all() -> None:
        for blob in sealed:
            sealer.open_result("job-id", blob)

    sealed, sealing, _ = clocked(lambda: [sealer.seal_result("job-id", value) for _ in range(n)])
    _, opening, _ = clocked(open_all)
    return {"seal_us": sealing / n * 1e6, "open_us": opening / n * 1e6}


def _run_in(bench: Bench, n: int, encrypt: bool) -> dict[str, float]:
    """One run on a fresh namespace, made the process default (``fn.enqueue`` uses it)."""
    fresh = bench.broker()
    broker = connect(fresh.url, redis_settings=fresh.settings, defaults=fresh.defaults)
    return one_run(broker, n, encrypt)


def measure(n: int, repeats: int) -> dict[str, Any]:
    os.environ[KEYS_VARIABLE] = new_key("bench")
    alone = crypto_alone()  # also imports cryptography: not counted in the runs below
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "encrypted": []}
    bench = Bench()
    try:
        for encrypt in (False, True):  # warm up: script loading, first allocations
            _run_in(bench, min(n, 200), encrypt)
        for _ in range(repeats):
            for mode in runs:
                runs[mode].append(_run_in(bench, n, mode == "encrypted"))
    finally:
        bench.close()
    out: dict[str, Any] = {mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                           for mode, rs in runs.items()}
    out["crypto_alone"] = alone
    out["jobs"], out["repeats"] = n, repeats
    return out


def table(d: dict[str, Any]) -> str:
    plain, sealed = d["plain"], d["encrypted"]
    lines = [f"{'figure':24} {'plain':>10} {'encrypted':>10} {'difference':>11}"]
    for key in plain:
        lines.append(f"{key:24} {plain[key]:10.1f} {sealed[key]:10.1f} "
                     f"{sealed[key] - plain[key]:+11.1f}")
    c = d["crypto_alone"]
    lines.append(f"seal / open one 100-byte value alone: {c['seal_us']:.1f} / "
                 f"{c['open_us']:.1f} us")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.encryption", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    results = measure(args.jobs, args.repeats)
    print(table(results))
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
