"""Act on jobs: the ones an operator picked, or every job a filter matches.

Each job moves by its own Lua script (the same one ``Job.cancel`` or ``jobvisor dead
requeue`` runs), sent a chunk at a time in one pipeline, so a bulk action keeps every
guarantee of a single one and a million jobs never sit in memory. A walk over "all
matching" stops at the job that was last when it began: jobs that arrive meanwhile are
not chased (a requeued job that dies again is not requeued twice).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import msgspec

from jobs.audit import record_action
from jobs.enqueue import enqueue_call
from jobs.errors import ConfigurationError
from jobs.job import Job
from jobs.options import Call, EnqueueOptions
from jobs.query.cursor import last_position, walk
from jobs.query.filters import JobFilter
from jobs.query.listing import index_parts, records_of
from jobs.records import JobRecord
from jobs.store.broker import Broker
from jobs.store.connection import translated

FINAL = ("completed", "dead", "canceled")
PENDING = ("queued", "scheduled", "waiting")


class Action(StrEnum):
    REQUEUE = "requeue"  # dead or canceled -> queued, with fresh attempts
    CANCEL = "cancel"  # waiting, scheduled, queued -> canceled; active: killed, then canceled
    DELETE = "delete"  # gone for good; a job not yet started is canceled first


ACTIONS = tuple(a.value for a in Action)


class Outcome(msgspec.Struct, kw_only=True):
    action: str
    queue: str
    done: int  # jobs the action moved (a running job asked to stop counts)
    skipped: int  # jobs in a state the action does not apply to, or gone meanwhile


def checked_action(action: str) -> Action:
    try:
        return Action(action)
    except ValueError:
        raise ConfigurationError(f"action {action!r} is not one of {', '.join(ACTIONS)}") \
            from None


def _apply(broker: Broker, queue: str, records: Sequence[JobRecord], action: Action,
           reason: str) -> tuple[int, int]:
    """Run ``action`` on ``records`` of ``queue`` in one pipeline; (done, skipped)."""
    calls: list[tuple[Any, list[Any], list[Any]]] = []
    for r in records:
        if r.queue != queue:
            continue
        state = r.state.value
        if action is Action.REQUEUE and state in ("dead", "canceled"):
            calls.append((broker.scripts.requeue,
                          *broker.jobs.requeue_call(r.id, queue, ("dead", "canceled"))))
        elif action is Action.CANCEL and state not in FINAL:
            calls.append((broker.scripts.cancel, *broker.jobs.cancel_call(r.id, queue, reason)))
        elif action is Action.DELETE and state in PENDING:
            calls.append((broker.scripts.cancel, *broker.jobs.cancel_call(r.id, queue, reason)))
            calls.append((broker.scripts.purge,
                          *broker.jobs.purge_call(r.id, queue, ("canceled",))))
        elif action is Action.DELETE and state in FINAL:
            calls.append((broker.scripts.purge, *broker.jobs.purge_call(r.id, queue, FINAL)))
    if not calls:
        return 0, len(records)
    with translated(broker.url):
        pipe = broker.client.pipeline(transaction=False)
        for script, keys, args in calls:
            script(keys=keys, args=args, client=pipe)
        replies = pipe.execute(raise_on_error=False)
    last_step = [i for i, c in enumerate(calls)
                 if not (action is Action.DELETE and c[0] is broker.scripts.cancel)]
    done = sum(1 for i in last_step if replies[i] in (1, b"active"))
    return done, len(records) - done


def act_on(broker: Broker, queue: str, job_ids: Sequence[str], action: str, *,
           who: str = "library", reason: str = "canceled by request") -> Outcome:
    """``action`` on the given jobs of ``queue``; others are skipped."""
    chosen = checked_action(action)
    done = skipped = 0
    for start in range(0, len(job_ids), 500):
        records = records_of(broker, list(job_ids[start:start + 500]))
        d, s = _apply(broker, queue, records, chosen, reason)
        done, skipped = done + d, skipped + s + (min(500, len(job_ids) - start) - len(records))
    record_action(broker, who, chosen.value, queue, done, f"{len(job_ids)} chosen")
    return Outcome(action=chosen.value, queue=queue, done=done, skipped=skipped)


def act_on_matching(broker: Broker, queue: str, state: str, action: str, *,
                    where: JobFilter | None = None, who: str = "library",
                    reason: str = "canceled by request") -> Outcome:
    """``action`` on every job in ``state`` on ``queue`` that ``where`` matches."""
    chosen = checked_action(action)
    where = where or JobFilter()
    done = skipped = 0
    now = time.time()
    for part in index_parts(broker, queue, state):
        stop = last_position(broker, part.key, newest_first=False)
        if stop is None:
            continue
        for chunk in walk(broker, part.key, newest_first=False, stop=stop):
            records = [r for r in records_of(broker, [p.member for p in chunk])
                       if r.state.value == state and part.holds(r, queue)
                       and where.matches(r, now)]
            d, s = _apply(broker, queue, records, chosen, reason)
            done, skipped = done + d, skipped + s
    scope = f"all {state} matching {msgspec.json.encode(where).decode()}"
    record_action(broker, who, chosen.value, queue, done, scope)
    return Outcome(action=chosen.value, queue=queue, done=done, skipped=skipped)


def clear_queue(broker: Broker, queue: str, *, who: str = "library") -> Outcome:
    """Cancel every queued job of ``queue`` (reason "queue cleared"), those a rate or
    concurrency limit holds back included; they stay listed as canceled until trimmed,
    and their dependents are canceled as for any cancel."""
    return act_on_matching(broker, queue, "queued", Action.CANCEL.value, who=who,
                           reason=f"queue cleared by {who}")


def copy_job(broker: Broker, job_id: str, *, who: str = "library") -> str:
    """Enqueue a new job with the same call: function, arguments, queue, priority, the
    options stored with it (timeouts, attempts, retry policy) and its meta; its id."""
    job = Job.fetch(job_id, broker)
    record = job.record
    if record.spec is None:
        raise ConfigurationError(f"job {job_id}'s arguments cannot be read: it cannot be copied")
    # An encrypted job's arguments are bound to its id: decrypted here (a DecryptionError
    # without its key), and the copy encrypted again under its own id.
    spec = broker.sealer.open_spec(job_id, record.spec)
    options = EnqueueOptions(
        queue=record.queue, priority=record.priority, timeout=spec.timeout,
        soft_timeout=spec.soft_timeout, max_attempts=spec.max_attempts,
        result_ttl=spec.result_ttl, backoff=spec.backoff, retry_on=spec.retry_on,
        dont_retry_on=spec.dont_retry_on, meta=record.meta,
        encrypt=record.spec.sealed is not None or None)
    copy = enqueue_call(Call(spec.function, tuple(spec.args), dict(spec.kwargs), options), broker)
    record_action(broker, who, "copy", record.queue, 1, f"copy of {job_id}: {copy.id}")
    return copy.id
