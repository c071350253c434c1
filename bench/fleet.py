"""A fleet on one server: many supervisors (each standing for a host) share one Valkey.

What one server costs per job is the ceiling of the whole fleet, however many hosts run
workers: Valkey runs scripts on one core. These scenarios measure that cost, the
connections a fleet holds, what an idle fleet costs the server, and how many idle
workers one enqueue wakes (a thundering herd would wake them all).
"""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

import psutil

from bench.env import Bench, children, cpu_seconds, idle_workers, wait_for
from bench.scenarios import _wait_drained
from jobs import Broker, JobState, Queue
from jobs.cluster import pause, resume

CHUNK = 10_000  # jobs per enqueue_many call while filling the queue


def start_fleet(b: Bench, broker: Broker, hosts: int, workers: int,
                worker: str = "") -> list[subprocess.Popen[bytes]]:
    """``hosts`` supervisors of ``workers`` workers each, started together, all idle."""
    procs = [b.supervisor(broker, workers=workers, extra=f"max_workers = {workers}",
                          name="host", worker=worker, wait=False) for _ in range(hosts)]
    wait_for(lambda: all(idle_workers(p) == workers for p in procs), 60 + 2 * hosts * workers)
    return procs


def stop_fleet(b: Bench, procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        b.stop(p)


class ServerMeter:
    """The server's CPU seconds and command calls between two readings."""

    def __init__(self, b: Bench, broker: Broker) -> None:
        assert b.server.proc is not None
        self.server = psutil.Process(b.server.proc.pid)
        self.client = broker.client
        self.read()

    def _calls(self) -> dict[str, int]:
        return {name: v["calls"] for name, v in self.client.info("commandstats").items()}

    def read(self) -> None:
        t = self.server.cpu_times()
        self.cpu, self.at, self.calls = t.user + t.system, time.perf_counter(), self._calls()

    def since(self) -> dict[str, float]:
        """Seconds, server CPU seconds and command calls since the last reading (whose own
        INFO call is left out), per command name too (``cmdstat_blpop`` ...)."""
        t = self.server.cpu_times()
        now, calls = time.perf_counter(), self._calls()
        out = {"seconds": now - self.at, "cpu": t.user + t.system - self.cpu}
        for name, n in calls.items():
            out[name] = n - self.calls.get(name, 0)
        out["commands"] = sum(n for name, n in out.items()
                              if name.startswith("cmdstat_")) - 1
        return out


def connections(broker: Broker) -> int:
    return int(broker.client.info("clients")["connected_clients"])


def fleet(b: Bench, hosts: int, workers: int, n: int,
          claim_batch: int | None = None) -> dict[str, Any]:
    """Drain ``n`` queued no-op jobs with ``hosts`` x ``workers`` workers: the server's CPU
    and commands per job while they run, and the ceiling that makes for one server."""
    broker = b.broker()
    before = connections(broker)
    procs = start_fleet(b, broker, hosts, workers,
                        worker=f"claim_batch = {claim_batch}" if claim_batch else "")
    held = connections(broker) - before
    q = Queue("default", broker)
    pause("default", broker)  # all queued before the clock starts, none run early
    last = []
    for i in range(0, n, CHUNK):
        last = q.enqueue_many([("examples.cpu:noop",)] * min(CHUNK, n - i))
    meter = ServerMeter(b, broker)
    resume("default", broker)
    _wait_drained(q, last[-2:])
    used = meter.since()
    busy = connections(broker) - before
    stop_fleet(b, procs)
    per_job = used["cpu"] / n
    by_name = sorted(((k.removeprefix("cmdstat_"), v / n) for k, v in used.items()
                      if k.startswith("cmdstat_") and v), key=lambda kv: -kv[1])
    return {"hosts": hosts, "workers": hosts * workers,
            "jobs_per_s": n / used["seconds"],
            "server_us_per_job": per_job * 1e6,
            "commands_per_job": used["commands"] / n,
            "server_busy": used["cpu"] / used["seconds"],
            "one_server_ceiling_jobs_per_s": 1 / per_job,
            "connections_idle": held, "connections_after": busy,
            "connections_per_host": busy / hosts,
            "commands_per_job_by_name": {k: round(v, 3) for k, v in by_name},
            "note": "drain only (the jobs were queued before); ceiling = 1 / server CPU "
                    "per job"}


class TokensTaken:
    """Wake tokens handed to blocked workers, counted exactly: the server reports each
    ``BLPOP`` it serves with a token as a keyspace event (``lpop``) on the wake list; a
    wait that times out reports nothing, and the claim scripts never pop a token."""

    def __init__(self, broker: Broker, queue: str) -> None:
        self.client = broker.client
        self.count = 0
        self.client.config_set("notify-keyspace-events", "Kl")
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        channel = f"__keyspace@0__:{broker.keys.wake(queue)}"
        self.marker = f"{broker.keys.wake(queue)}:counted"
        self.marked = False
        self.pubsub.subscribe(**{channel: self._event, self.marker: self._marked})
        self.thread = self.pubsub.run_in_thread(sleep_time=0.05, daemon=True)

    def _event(self, message: dict[str, Any]) -> None:
        if message["data"] == b"lpop":
            self.count += 1

    def _marked(self, message: dict[str, Any]) -> None:
        self.marked = True

    def close(self) -> None:
        """Stop counting once every event sent so far has arrived (a subscriber gets its
        messages in order: the marker published now comes last)."""
        self.client.publish(self.marker, "")
        wait_for(lambda: self.marked, 10, 0.01)
        self.thread.stop()
        self.thread.join(5)
        self.pubsub.close()
        self.client.config_set("notify-keyspace-events", "")


def idle_fleet(b: Bench, hosts: int, workers: int, seconds: float, settle: float,
               probes: int) -> dict[str, Any]:
    """An idle fleet's cost to the server, then wake-ups per enqueue: ``probes`` jobs
    enqueued one at a time, each run to its end before the next, while every other
    worker waits. Wake-ups are the blocking waits that ended (BLPOP calls) while a probe
    ran, less those in as long a window right after with no enqueue."""
    broker = b.broker()
    before = connections(broker)
    procs = start_fleet(b, broker, hosts, workers)
    held = connections(broker) - before
    time.sleep(settle)  # let the idle pools settle before measuring
    pids = [p.pid for p in procs] + [c.pid for p in procs for c in children(p)]
    meter = ServerMeter(b, broker)
    fleet_cpu = cpu_seconds(pids)
    time.sleep(seconds)
    idle = meter.since()
    fleet_used = cpu_seconds(pids) - fleet_cpu
    q = Queue("default", broker)
    woken = 0.0
    tokens = TokensTaken(broker, "default")
    for _ in range(probes):
        meter.read()
        job = q.enqueue("examples.cpu:noop")
        # Polled, not waited on with BLPOP: the figure counts the workers' BLPOPs only.
        wait_for(lambda job=job: job.refresh().state == JobState.COMPLETED, 30, 0.0005)
        probe = meter.since()
        # The same time again with no enqueue: the idle fleet's own BLPOPs (each ends
        # every CLAIM_WAIT) in a window as long, right after; their difference is what
        # the enqueue woke.
        meter.read()
        time.sleep(probe["seconds"])
        quiet = meter.since()
        woken += probe.get("cmdstat_blpop", 0) - quiet.get("cmdstat_blpop", 0)
    tokens.close()
    after = connections(broker) - before
    stop_fleet(b, procs)
    return {"hosts": hosts, "workers": hosts * workers,
            "idle_commands_per_s": idle["commands"] / idle["seconds"],
            "idle_server_cpu_percent": idle["cpu"] / idle["seconds"] * 100,
            "idle_fleet_cpu_percent": fleet_used / idle["seconds"] * 100,
            "connections_idle": held, "connections_after": after,
            "wakeups_per_enqueue": tokens.count / probes,
            "blpops_ended_per_enqueue": woken / probes,
            "probes": probes,
            "note": "idle: commands/s and CPU % of one core over the idle window; "
                    "wake-ups: wake tokens BLPOP handed to a waiting worker per enqueue "
                    "(keyspace events); blpops_ended: BLPOPs ended per enqueue beyond the "
                    "idle fleet's own (timeouts included, so noisier)"}
