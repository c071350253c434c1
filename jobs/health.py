"""Health checks: does Redis answer, is a supervisor alive, do the queues keep up.

``check_health`` is the one implementation behind ``jobvisor health``, the supervisor's
``/readyz`` and any web app's: call it, then answer with ``response(health)``::

    from jobs.health import check_health, response, LIVE_BODY

    health = check_health(broker, max_lag=60.0, max_dead=100)
    status, body = response(health)  # 200 or 503, and the JSON of every check

It never raises for a Redis failure and it is bounded in time: it talks to Redis over a
connection of its own, opened for the call, with ``redis_timeout`` as the connect and
read timeout and no retries, so a server that is down or stalled fails the ``redis``
check in about ``redis_timeout`` seconds (the broker's own client may retry for much
longer). When Redis does not answer, the checks that need it are reported failed, as
not run, with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import msgspec

from jobs.cluster import paused, supervisor_entry, supervisors
from jobs.errors import BrokerUnavailable, JobsError
from jobs.stats import oldest_queued_age
from jobs.store.broker import Broker
from jobs.store.slot_owner import namespace_slot

DEFAULT_REDIS_TIMEOUT = 1.0
LIVE_BODY = b'{"status":"ok"}'  # /healthz: the process answers
SHOWN_SUPERVISORS = 5


class Check(msgspec.Struct, frozen=True, kw_only=True):
    """One check's verdict.

    ``name`` is ``redis``, ``supervisors`` (or ``supervisor``, see ``check_health``),
    ``lag:<queue>`` or ``dead:<queue>`` (``lag`` or ``dead`` alone when there is no queue
    yet, or when the checks did not run);
    ``detail`` says in one sentence what was found; ``value`` is what was measured:
    seconds for ``redis`` (the PING's round trip, connecting included) and ``lag``
    (``None``: no job queued), counts for ``supervisors``, ``supervisor`` (1 or 0) and
    ``dead``, ``None`` for a check that did not run.
    """

    name: str
    ok: bool
    detail: str
    value: float | int | None = None


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """Every check, and ``ok`` when all of them passed."""

    ok: bool
    checks: list[Check]


def check_health(broker: Broker, *, max_lag: float | None = None,
                 max_dead: int | None = None,
                 redis_timeout: float = DEFAULT_REDIS_TIMEOUT,
                 supervisor: str | None = None) -> Health:
    """Check Redis (PING answered within ``redis_timeout`` seconds) and that at least one
    supervisor of the broker's namespace is live; with ``max_lag`` (seconds), that no
    queue's oldest queued job has waited longer; with ``max_dead``, that no queue holds
    more dead jobs. ``None`` or 0 leaves a threshold out. Paused queues are not held to
    ``max_lag``: their jobs wait on purpose.

    With ``supervisor`` (an id, ``host:pid``), the ``supervisor`` check replaces the
    ``supervisors`` one: that supervisor's own entry is live (one GET), which is what a
    supervisor's own ``/readyz`` means."""
    probe: Broker | None = None
    checks: list[Check] = []
    try:
        probe = _probe(broker, redis_timeout)
        checks.append(_redis(probe, redis_timeout))
        if checks[0].ok:
            checks += _cluster(probe, max_lag or None, max_dead or None, supervisor)
        else:
            checks += _not_run("Redis did not answer", max_lag, max_dead, supervisor)
    except JobsError as exc:  # the probe's own settings (a password file) are unusable
        checks = [Check(name="redis", ok=False, detail=str(exc)),
                  *_not_run("Redis could not be reached", max_lag, max_dead, supervisor)]
    finally:
        if probe is not None:
            probe.client.close()
    return Health(ok=all(c.ok for c in checks), checks=checks)


def response(health: Health) -> tuple[int, bytes]:
    """The HTTP status (200 when every check passed, else 503) and JSON body of /readyz:
    ``{"status": "ok" | "fail", "checks": [{"name", "ok", "detail", "value"}, ...]}``."""
    body = {"status": "ok" if health.ok else "fail", "checks": health.checks}
    return (200 if health.ok else 503), msgspec.json.encode(body)


def as_dict(health: Health) -> dict[str, Any]:
    """The same fields as ``response``'s body, as plain Python values."""
    return {"status": "ok" if health.ok else "fail",
            "checks": msgspec.to_builtins(health.checks)}


def _probe(broker: Broker, timeout: float) -> Broker:
    """A broker on the same server and namespace with its own short-timeout connection:
    no retries, so an outage costs one timeout, not the client's back-off schedule."""
    settings = msgspec.structs.replace(broker.settings, socket_timeout=timeout,
                                       connect_timeout=timeout)
    return Broker(broker.url, redis_settings=settings, defaults=broker.defaults, retries=0)


def _redis(probe: Broker, timeout: float) -> Check:
    started = time.monotonic()
    try:
        probe.ping()
    except JobsError as exc:
        return Check(name="redis", ok=False,
                     detail=f"no answer to PING (bound {timeout:g} s): {exc}")
    took = time.monotonic() - started
    if took > timeout:
        return Check(name="redis", ok=False, value=round(took, 6),
                     detail=f"answered PING in {_seconds(took)}, over the {timeout:g} s bound")
    detail = f"answered PING in {_seconds(took)} (bound {timeout:g} s)"
    try:
        primary = probe.cluster_primary()
    except JobsError:
        primary = None  # it answered a moment ago: the PING is the check
    if primary is not None:
        ns = probe.settings.namespace
        detail += f"; namespace {ns!r} (slot {namespace_slot(ns)}) is on {primary}"
    return Check(name="redis", ok=True, value=round(took, 6), detail=detail)


def _not_run(why: str, max_lag: float | None, max_dead: int | None,
             supervisor: str | None) -> list[Check]:
    names = (["supervisor" if supervisor else "supervisors"] + (["lag"] if max_lag else [])
             + (["dead"] if max_dead else []))
    return [Check(name=n, ok=False, detail=f"not run: {why}") for n in names]


def _cluster(probe: Broker, max_lag: float | None, max_dead: int | None,
             supervisor: str | None) -> list[Check]:
    """The checks after PING, in order; once Redis stops answering, the rest are not run."""
    steps: list[tuple[str, Callable[[], Iterator[Check]]]] = [
        ("supervisor", partial(_supervisor, probe, supervisor)) if supervisor else
        ("supervisors", partial(_supervisors, probe))]
    if max_lag is not None:
        steps.append(("lag", partial(_lag, probe, max_lag)))
    if max_dead is not None:
        steps.append(("dead", partial(_dead, probe, max_dead)))
    out: list[Check] = []
    gone = ""
    for name, step in steps:
        if gone:
            out.append(Check(name=name, ok=False, detail=f"not run: {gone}"))
            continue
        try:
            for check in step():  # a queue's verdict stands if a later queue's read fails
                out.append(check)
        except BrokerUnavailable as exc:
            gone = "Redis stopped answering"
            out.append(Check(name=name, ok=False, detail=str(exc)))
        except Exception as exc:  # a refusal (NOPERM) or a record it cannot read
            out.append(Check(name=name, ok=False, detail=f"{type(exc).__name__}: {exc}"))
    return out


def _supervisors(probe: Broker) -> Iterator[Check]:
    ids = [entry["id"] for entry in supervisors(probe)]
    if not ids:
        yield Check(name="supervisors", ok=False, value=0, detail=(
            f"no live supervisor in namespace {probe.keys.ns!r}: start one with `jobvisor "
            "run`, or check that its [redis] url and namespace are this configuration's"))
        return
    shown = ", ".join(ids[:SHOWN_SUPERVISORS]) + (", ..." if len(ids) > SHOWN_SUPERVISORS
                                                  else "")
    yield Check(name="supervisors", ok=True, value=len(ids),
                detail=f"{len(ids)} live supervisor{'s' if len(ids) > 1 else ''}: {shown}")


def _supervisor(probe: Broker, ident: str) -> Iterator[Check]:
    if supervisor_entry(ident, probe) is None:
        yield Check(name="supervisor", ok=False, value=0, detail=(
            f"supervisor {ident} has no live entry in Redis: it has not published its "
            "state for several seconds (it renews it every second)"))
    else:
        yield Check(name="supervisor", ok=True, value=1,
                    detail=f"supervisor {ident} is live (its entry in Redis is fresh)")


def _lag(probe: Broker, max_lag: float) -> Iterator[Check]:
    queues = probe.jobs.known_queues()
    if not queues:
        yield Check(name="lag", ok=True, detail=f"no queues yet (max_lag {max_lag:g} s)")
        return
    held = paused(probe)
    for q in queues:
        age = oldest_queued_age(probe, q)
        value = None if age is None else round(age, 3)
        if age is None:
            yield Check(name=f"lag:{q}", ok=True, value=value,
                        detail=f"queue {q!r} has no queued job (max_lag {max_lag:g} s)")
        elif q in held:
            yield Check(name=f"lag:{q}", ok=True, value=value, detail=(
                f"queue {q!r} is paused; its oldest queued job has waited {_seconds(age)} "
                "(paused queues are not held to max_lag)"))
        elif age > max_lag:
            yield Check(name=f"lag:{q}", ok=False, value=value, detail=(
                f"queue {q!r}: its oldest queued job has waited {_seconds(age)}, more than "
                f"max_lag {max_lag:g} s: too few workers serve it, or none (see `jobvisor "
                "stats` and `jobvisor hosts`)"))
        else:
            yield Check(name=f"lag:{q}", ok=True, value=value, detail=(
                f"queue {q!r}: its oldest queued job has waited {_seconds(age)} "
                f"(max_lag {max_lag:g} s)"))


def _dead(probe: Broker, max_dead: int) -> Iterator[Check]:
    queues = probe.jobs.known_queues()
    if not queues:
        yield Check(name="dead", ok=True, detail=f"no queues yet (max_dead {max_dead})")
        return
    for q in queues:
        n = probe.jobs.counts(q, ["dead"])["dead"]
        if n > max_dead:
            yield Check(name=f"dead:{q}", ok=False, value=n, detail=(
                f"queue {q!r} holds {_jobs(n)}, more than max_dead {max_dead}: see "
                f"`jobvisor dead list --queue {q}`, then requeue or purge them"))
        else:
            yield Check(name=f"dead:{q}", ok=True, value=n,
                        detail=f"queue {q!r} holds {_jobs(n)} (max_dead {max_dead})")


def _seconds(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.1f} s"


def _jobs(n: int) -> str:
    return f"{n} dead job{'' if n == 1 else 's'}"
