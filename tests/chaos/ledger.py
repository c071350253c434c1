"""The ledger check every chaos scenario ends with, and the figures it reports.

The workload (``tests.chaos.ledger_jobs``) records each execution on a Redis the
faults never touch. After the fault, ``audit`` reads the job server's state indexes
and records and the ledger, and ``Findings.problems`` lists every broken promise:

- a job the producer was told was stored is missing (lost);
- a job is in no state index, in several, or not in the one its record names;
- a job is not final (``queued``, ``scheduled``, ``active``...) once the run settled,
  in particular ``active`` after every lease has expired;
- a job ended ``dead`` or ``canceled`` for a reason the scenario does not expect;
- a ``completed`` job never ran (no ledger entry), or a job ran more often than it was
  claimed, or something ran that nobody enqueued;
- a job ran more than once without one recorded crash, kill, timeout or lease expiry
  (``Job.errors`` kinds crash / lost / timeout) per extra execution.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from jobs import Broker, JobRecord
from jobs.records import ErrorKind, record_from_hash
from tests.chaos.rig import QUEUE
from tests.helpers import INDEXES, wait_until

FINAL = ("completed", "dead", "canceled")
OPEN = tuple(s for s in INDEXES if s not in FINAL)
# Error kinds that say an attempt was cut short from outside the function: the job may
# have done (part of) its work, so running it again is the at-least-once promise.
EXPLAINS = frozenset({ErrorKind.CRASH, ErrorKind.LOST, ErrorKind.TIMEOUT})
RESULTS: list[dict[str, Any]] = []  # every scenario's figures, for the terminal summary


class Ledger:
    """The side effects of one scenario's jobs, on the (never faulted) ledger server."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key
        self.client = redis.Redis.from_url(url)

    def runs(self) -> dict[str, int]:
        raw = self.client.hgetall(f"{self.key}:runs")
        return {k.decode(): int(v) for k, v in raw.items()}

    def done(self) -> set[str]:
        return {m.decode() for m in self.client.smembers(f"{self.key}:done")}

    def first_runs(self) -> dict[str, float]:
        """Wall time of each job's first execution."""
        return {k.decode(): v for k, v in
                self.client.zrange(f"{self.key}:first", 0, -1, withscores=True)}

    def executions(self) -> int:
        return sum(self.runs().values())

    def clear(self) -> None:
        self.client.delete(f"{self.key}:runs", f"{self.key}:done", f"{self.key}:first")
        self.client.close()


def settled(broker: Broker) -> bool:
    """Nothing of the queue is waiting, scheduled, queued or active any more."""
    counts = broker.jobs.counts(QUEUE, OPEN)
    return not any(counts.values())


def wait_settled(broker: Broker, timeout: float = 60.0) -> float:
    """Wait (bounded) until the queue has settled; returns the seconds it took."""
    began = time.monotonic()
    wait_until(lambda: settled(broker), timeout=timeout, interval=0.02,
               what=f"queue to settle ({broker.jobs.counts(QUEUE, INDEXES)})")
    return time.monotonic() - began


def counted_completions(broker: Broker) -> int:
    """What the workers' outcome counters say completed (flushed when they go idle)."""
    raw = broker.client.hget(broker.keys.totals(), f"{QUEUE}|completed")
    return int(raw or 0)


def killed_too_often(record: JobRecord) -> bool:
    """A dead job whose every failed attempt was cut short from outside: expected under
    repeated kills once ``max_attempts`` is used up."""
    return bool(record.errors) and all(e.kind in EXPLAINS for e in record.errors)


@dataclass
class Findings:
    jobs: int = 0
    maybe: int = 0  # sent but never acknowledged: may or may not have been stored
    executions: int = 0
    states: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    excused_lost: list[str] = field(default_factory=list)
    inconsistent: list[str] = field(default_factory=list)
    not_final: list[str] = field(default_factory=list)
    stuck_active: int = 0
    unexpected_end: list[str] = field(default_factory=list)
    completed_never_ran: list[str] = field(default_factory=list)
    ran_more_than_claimed: list[str] = field(default_factory=list)
    phantoms: list[str] = field(default_factory=list)
    duplicates: int = 0  # jobs that ran more than once
    extra_runs: int = 0  # executions beyond the first
    causes: dict[str, int] = field(default_factory=dict)  # error types that explain them
    unexplained: list[str] = field(default_factory=list)
    excused: list[str] = field(default_factory=list)  # unexplained, but the scenario allows it
    attempts_spent: dict[str, int] = field(default_factory=dict)  # failed attempts by type
    counted_completed: int = 0  # the workers' completion counter (stats), for comparison

    def problems(self) -> list[str]:
        out = []
        for name in ("lost", "inconsistent", "not_final", "unexpected_end",
                     "completed_never_ran", "ran_more_than_claimed", "phantoms", "unexplained"):
            items = getattr(self, name)
            if items:
                out.append(f"{name}: {len(items)} job(s), e.g. {sorted(items)[:5]}")
        if self.stuck_active:
            out.append(f"{self.stuck_active} job(s) still in the active index")
        return out

    def figures(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("lost", "excused_lost", "inconsistent", "not_final", "unexpected_end",
                     "completed_never_ran", "ran_more_than_claimed", "phantoms", "unexplained",
                     "excused"):
            d[name] = len(d[name])
        return d


def _records(broker: Broker, ids: list[str]) -> dict[str, JobRecord]:
    out = {}
    for i in range(0, len(ids), 1000):
        chunk = ids[i : i + 1000]
        for job_id, fields in zip(chunk, broker.jobs.fetch_many(chunk), strict=True):
            if fields:
                out[job_id] = record_from_hash(job_id, fields)
    return out


def _index_members(broker: Broker) -> dict[str, set[str]]:
    c = broker.client
    return {s: {m.decode() for m in c.zrange(broker.keys.state_index(QUEUE, s), 0, -1)}
            for s in INDEXES}


def audit(broker: Broker, ledger: Ledger, acked: Iterable[str], *, maybe: Iterable[str] = (),
          end_ok: Callable[[JobRecord], bool] = killed_too_often,
          excuse_loss: Callable[[str], bool] = lambda job_id: False,
          excuse_duplicate: Callable[[str], bool] = lambda job_id: False) -> Findings:
    """Compare what the job server says with what the ledger saw; see the module doc.

    ``end_ok`` decides which ``dead`` / ``canceled`` jobs the scenario expects;
    ``excuse_loss`` / ``excuse_duplicate`` name the losses and unexplained duplicates a
    scenario documents as possible (``everysec`` after a server crash), which are then
    counted apart instead of failing the check.
    """
    acked = list(dict.fromkeys(acked))
    maybe = [m for m in dict.fromkeys(maybe) if m not in set(acked)]
    records = _records(broker, acked + maybe)
    members = _index_members(broker)
    runs = ledger.runs()
    done = ledger.done()
    f = Findings(jobs=len(acked), maybe=len(maybe), executions=sum(runs.values()))
    states: Counter[str] = Counter()
    causes: Counter[str] = Counter()
    spent: Counter[str] = Counter()
    for job_id in acked + maybe:
        rec = records.get(job_id)
        n = runs.get(job_id, 0)
        if rec is None:
            if job_id in maybe:
                continue
            (f.excused_lost if excuse_loss(job_id) else f.lost).append(job_id)
            continue
        state = rec.state.value
        states[state] += 1
        spent.update(e.type for e in rec.errors)
        found = [s for s in INDEXES if job_id in members[s]]
        if found != [state]:
            f.inconsistent.append(job_id)
        if state not in FINAL:
            f.not_final.append(job_id)
        elif state != "completed" and not end_ok(rec):
            f.unexpected_end.append(job_id)
        if state == "completed" and job_id not in done:
            f.completed_never_ran.append(job_id)
        if n > rec.attempts:
            (f.excused if excuse_duplicate(job_id) else f.ran_more_than_claimed).append(job_id)
        if n > 1:
            f.duplicates += 1
            f.extra_runs += n - 1
            why = [e for e in rec.errors if e.kind in EXPLAINS]
            if len(why) >= n - 1:
                causes.update(e.type for e in why[: n - 1])
            elif excuse_duplicate(job_id):
                f.excused.append(job_id)
            else:
                f.unexplained.append(job_id)
    f.phantoms = sorted(set(runs) - set(acked) - set(maybe))
    f.counted_completed = counted_completions(broker)
    f.stuck_active = len(members["active"])
    f.states = dict(states)
    f.causes = dict(causes)
    f.attempts_spent = dict(spent)
    return f


def assert_ledger(findings: Findings) -> None:
    problems = findings.problems()
    assert not problems, "ledger check failed:\n  " + "\n  ".join(problems)


def report(scenario: str, findings: Findings, **figures: Any) -> dict[str, Any]:
    """Record one scenario's figures: a JSON line in ``$JOBVISOR_CHAOS_REPORT`` (if set),
    a line on stdout, and the terminal summary at the end of the run."""
    line = {"scenario": scenario, "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **figures, **findings.figures()}
    line["lost"] = len(findings.lost)
    RESULTS.append(line)
    path = os.environ.get("JOBVISOR_CHAOS_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps(line, sort_keys=True) + "\n")
    print(summary(line))
    return line


def summary(line: dict[str, Any]) -> str:
    causes = ", ".join(f"{k} {v}" for k, v in sorted(line.get("causes", {}).items())) or "-"
    rec = line.get("recovery_s")
    return (f"[chaos] {line['scenario']}: {line['jobs']} jobs, {line['executions']} runs, "
            f"faults {line.get('faults', 0)} ({line.get('fault', '')}), lost {line['lost']}, "
            f"duplicates {line['duplicates']} ({causes}), recovery {rec} s, "
            f"wall {line.get('wall_s')} s")
