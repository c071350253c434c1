"""What spans supervisors: their registry entries, control messages, paused queues."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from redis.client import Pipeline

from jobs.errors import ConfigurationError
from jobs.store.broker import Broker, default_broker
from jobs.store.connection import translated
from jobs.store.keys import check_name

CONTROL_TTL_MS = 60_000
STALE_ID_MS = 3_600_000
# The pool of ``[worker] queues`` and ``[supervisor] workers``; ``[[pools]]`` add others.
DEFAULT_POOL = "default"


class Control(msgspec.Struct, frozen=True, tag=True):
    """Base of the messages a supervisor takes from its control list."""


class Scale(Control, frozen=True, tag="scale", omit_defaults=True):
    workers: int
    pool: str | None = None  # None: the default pool (and the message older ones read)


class Reload(Control, frozen=True, tag="reload"):
    pass


class PausePool(Control, frozen=True, tag="pause_pool"):
    """Workers of ``pool`` stop claiming (``paused``) or start again; they stay up."""

    pool: str
    paused: bool


_control_decoder = msgspec.json.Decoder(Scale | Reload | PausePool)


def supervisors(broker: Broker | None = None) -> list[dict[str, Any]]:
    """Every live supervisor's published state (host, pid, workers, ...), sorted by id.

    Two reads whatever the database holds: the ids from their set, then their entries
    (an id whose entry expired is a supervisor that is gone).
    """
    b = broker or default_broker()
    with translated(b.url):
        ids = sorted(m.decode() for m in b.client.zrange(b.keys.supervisor_ids(), 0, -1))
        values = b.client.mget([b.keys.supervisor(i) for i in ids]) if ids else []
    out = []
    for ident, raw in zip(ids, values, strict=True):
        if raw:
            entry = msgspec.json.decode(raw)
            entry["id"] = ident
            out.append(entry)
    return out


def publish_entry(pipe: Pipeline, broker: Broker, ident: str, entry: bytes,
                  ttl_ms: int) -> None:
    """Queue on ``pipe`` the writes of supervisor ``ident``'s registry entry: the entry,
    gone ``ttl_ms`` after the last write, and its id in the set readers list."""
    pipe.set(broker.keys.supervisor(ident), entry, px=ttl_ms)
    pipe.zadd(broker.keys.supervisor_ids(), {ident: int(time.time() * 1000)})


def withdraw_entry(broker: Broker, ident: str) -> None:
    """Remove a stopping supervisor's entry and id."""
    with translated(broker.url):
        pipe = broker.client.pipeline(transaction=False)
        pipe.delete(broker.keys.supervisor(ident))
        pipe.zrem(broker.keys.supervisor_ids(), ident)
        pipe.execute()


def forget_stale_ids(broker: Broker) -> int:
    """Drop the ids of supervisors silent for ``STALE_ID_MS`` (killed ones leave theirs);
    so long that hosts' clocks, which score the ids, need not agree. How many went."""
    key = broker.keys.supervisor_ids()
    with translated(broker.url):
        stale = broker.client.zrangebyscore(key, "-inf", int(time.time() * 1000) - STALE_ID_MS)
        if stale:
            broker.client.zrem(key, *stale)
    return len(stale)
def pools_of(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """A supervisor's pools (name, queues, target, workers, paused) with how many of their
    workers are busy; one of an older version shows its workers as the default pool."""
    workers = entry.get("workers", [])
    pools = entry.get("pools") or [{"name": DEFAULT_POOL, "queues": entry.get("queues", []),
                                     "target": entry.get("target", len(workers)),
                                     "workers": len(workers), "paused": False}]
    return [{**p, "busy": sum(1 for w in workers if w.get("pool", DEFAULT_POOL) == p["name"]
                              and w.get("state") == "busy")} for p in pools]


def served_queues(broker: Broker | None = None) -> set[str]:
    """The queues some live supervisor of this namespace claims from."""
    return {q for entry in supervisors(broker) for q in entry.get("queues", ())}


def unserved_warning(queue: str, broker: Broker) -> str:
    """Why jobs of ``queue`` may wait forever, for views to print when nothing serves it."""
    return (f"warning: no live supervisor in namespace {broker.keys.ns!r} serves queue "
            f"{queue!r}, so its jobs wait until one does; check that the supervisor's "
            "[redis] url and namespace match this process's (JOBVISOR_CONFIG, "
            "JOBVISOR_REDIS_NAMESPACE) and that [worker].queues or one of its [[pools]] lists "
            "the queue")


def supervisor_entry(ident: str, broker: Broker | None = None) -> dict[str, Any] | None:
    """The published state of supervisor ``ident`` (``host:pid``), or None if it is not live.

    One GET, so the roles allowed to steer a supervisor need no SCAN to check on it.
    """
    b = broker or default_broker()
    with translated(b.url):
        raw = b.client.get(b.keys.supervisor(ident))
    if not raw:
        return None
    entry: dict[str, Any] = msgspec.json.decode(raw)
    entry["id"] = ident
    return entry


def send_control(ident: str, message: Control, broker: Broker | None = None) -> None:
    """Queue a control message for the supervisor ``ident`` (``host:pid``)."""
    b = broker or default_broker()
    key = b.keys.control(ident)
    with translated(b.url):
        pipe = b.client.pipeline(transaction=True)
        pipe.rpush(key, msgspec.json.encode(message))
        pipe.pexpire(key, CONTROL_TTL_MS)
        pipe.execute()


def _pools(ident: str, entry: dict[str, Any], pool: str | None) -> dict[str, dict[str, Any]]:
    """The pools of the supervisor of ``entry`` by name, checked to hold ``pool`` (None:
    the default pool); a supervisor of an older version has only the default pool."""
    pools = entry.get("pools")
    if pools is None:
        if pool is not None:
            raise ConfigurationError(
                f"supervisor {ident} runs a jobvisor without pools: upgrade it, or leave "
                "out --pool to act on all its workers")
        return {DEFAULT_POOL: {"name": DEFAULT_POOL, "target": entry.get("target", 0),
                               "workers": len(entry.get("workers", ()))}}
    by_name = {p["name"]: p for p in pools}
    name = pool or DEFAULT_POOL
    if name not in by_name:
        known = ", ".join(by_name) or "none"
        if pool is None:
            raise ConfigurationError(
                f"supervisor {ident} runs no default pool (its [worker] queues is empty): "
                f"name one of its pools with --pool ({known})")
        raise ConfigurationError(
            f"supervisor {ident} has no pool {name!r} (its pools: {known}); see "
            "`jobvisor hosts`")
    return by_name


def _scale_refusal(ident: str, workers: int, entry: dict[str, Any], pool_max: int,
                   pool: str, others: int) -> str | None:
    """Why ``scale workers`` cannot be done by the supervisor of ``entry``, if it cannot
    (``others``: what the supervisor's other pools want)."""
    most = entry.get("max_workers")  # absent from a supervisor of an older version
    if most is None or workers + others <= most:
        return None
    if entry.get("max_workers_configured"):
        how = "raise supervisor.max_workers in its config.toml and reload it"
    else:
        how = "set supervisor.max_workers in its config.toml and reload it to allow more"
    origin = entry.get("max_workers_from", "supervisor.max_workers")
    if others:
        return (f"scale {workers} refused: {ident} runs at most {most} workers ({origin}) "
                f"and its other pools want {others}, leaving {max(0, most - others)} for "
                f"pool {pool!r}; scale them down, or {how} (up to {pool_max})")
    return (f"scale {workers} refused: {ident} runs at most {most} workers ({origin}); "
            f"{how} (up to {pool_max})")


def live_entry(ident: str, broker: Broker) -> dict[str, Any]:
    """The entry of supervisor ``ident``, or an error saying it is not live."""
    entry = supervisor_entry(ident, broker)
    if entry is None:
        raise ConfigurationError(
            f"supervisor {ident} is not live: it has no entry in Redis (a running supervisor "
            "renews its entry every second); see `jobvisor hosts` for the live ones")
    return entry


def request_scale(ident: str, workers: int, pool_max: int, broker: Broker | None = None,
                  pool: str | None = None) -> dict[str, Any]:
    """Ask a live supervisor to run ``workers`` workers in ``pool`` (None: its default
    pool); the pool's entry as it was, or an error saying why it cannot (not live, no
    such pool, or beyond its maximum, which ``pool_max`` caps).

    0 stops a pool; only the default pool of a supervisor without other pools needs 1.
    """
    if workers < 0:
        raise ConfigurationError("scale needs a number of workers, 0 or more")
    b = broker or default_broker()
    entry = live_entry(ident, b)
    pools = _pools(ident, entry, pool)
    name = pool or DEFAULT_POOL
    if workers < 1 and name == DEFAULT_POOL and len(pools) == 1:
        raise ConfigurationError("scale needs at least 1 worker")
    others = sum(p["target"] for p in pools.values() if p["name"] != name)
    refusal = _scale_refusal(ident, workers, entry, pool_max, name, others)
    if refusal:
        raise ConfigurationError(refusal)
    send_control(ident, Scale(workers=workers, pool=pool), b)
    return pools[name]


def request_pool_pause(ident: str, pool: str, paused: bool,
                       broker: Broker | None = None) -> dict[str, Any]:
    """Ask a live supervisor to pause (or resume) one of its pools; the pool's entry as
    it was."""
    b = broker or default_broker()
    found = _pools(ident, live_entry(ident, b), pool)[pool]
    send_control(ident, PausePool(pool=pool, paused=paused), b)
    return found


def take_control(ident: str, broker: Broker, wait: float = 0.0) -> list[Control]:
    """Messages waiting for supervisor ``ident``, in the order sent; unreadable ones are
    dropped. With ``wait``, block up to that long (bounded by the socket timeout) for one."""
    key = broker.keys.control(ident)
    raw: list[bytes] = []
    with translated(broker.url):
        if wait > 0:
            popped = broker.client.blpop([key], timeout=max(
                0.01, min(wait, broker.settings.socket_timeout * 0.6)))
            if not popped:
                return []
            raw.append(popped[1])
        raw += broker.client.lpop(key, 100) or []
    out: list[Control] = []
    for item in raw:
        try:
            out.append(_control_decoder.decode(item))
        except msgspec.DecodeError:
            continue
    return out


def pause(queue: str, broker: Broker | None = None) -> None:
    """Workers stop claiming from ``queue`` (jobs stay queued; running ones finish)."""
    b = broker or default_broker()
    with translated(b.url):
        b.client.sadd(b.keys.paused(), check_name("queue", queue))


def resume(queue: str, broker: Broker | None = None) -> None:
    """Workers claim from ``queue`` again; blocked workers are woken."""
    b = broker or default_broker()
    b.jobs.resume(check_name("queue", queue))


def paused(broker: Broker | None = None) -> set[str]:
    b = broker or default_broker()
    with translated(b.url):
        return {q.decode() for q in b.client.smembers(b.keys.paused())}
