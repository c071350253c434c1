"""Steering what runs, from any surface: pause or resume a queue, scale a supervisor's
pool, pause or resume a pool, reload a supervisor.

Each function checks the request, sends it (``jobs.cluster``), records it in the audit
trail and says what it did in the words the CLI, the pages and the API all show, so the
three cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import msgspec

from jobs.audit import record_action
from jobs.cluster import Reload, pause, request_pool_pause, request_scale, resume, send_control
from jobs.store.broker import Broker, default_broker


class Steered(msgspec.Struct, frozen=True, kw_only=True):
    message: str  # what to tell the user
    pool: dict[str, Any] = {}  # scale and pool pause: the pool's entry as it was


def steer_queue(queue: str, *, paused: bool, who: str = "library",
                broker: Broker | None = None) -> Steered:
    """Pause ``queue`` (workers stop claiming from it; jobs stay queued) or resume it."""
    b = broker or default_broker()
    (pause if paused else resume)(queue, b)
    action = "pause" if paused else "resume"
    record_action(b, who, action, queue, 0, "queue")
    return Steered(message=f"{action}d {queue}")


def scale_pool(ident: str, workers: int, *, pool: str | None, pool_max: int,
               who: str = "library", broker: Broker | None = None) -> Steered:
    """Ask supervisor ``ident`` to run ``workers`` workers in ``pool`` (None: its default
    pool); refused as ``request_scale`` says."""
    b = broker or default_broker()
    found = request_scale(ident, workers, pool_max, b, pool=pool)
    record_action(b, who, "scale", "", workers, ident if pool is None else f"{ident} pool {pool}")
    where = f" in pool {pool}" if pool else ""
    return Steered(message=f"asked {ident} to run {workers} workers{where} "
                           f"(now {found['workers']})", pool=found)


def steer_pool(ident: str, pool: str, *, paused: bool, who: str = "library",
               broker: Broker | None = None) -> Steered:
    """Ask supervisor ``ident`` to pause ``pool`` (its workers stay up, claiming nothing)
    or resume it."""
    b = broker or default_broker()
    found = request_pool_pause(ident, pool, paused, b)
    action = "pause" if paused else "resume"
    record_action(b, who, f"{action} pool", "", 0, f"{ident} pool {pool}")
    return Steered(message=f"asked {ident} to {action} pool {pool}", pool=found)


def reload_supervisor(ident: str, *, who: str = "library",
                      broker: Broker | None = None) -> Steered:
    """Ask supervisor ``ident`` to re-read its config and restart its workers, rolling."""
    b = broker or default_broker()
    send_control(ident, Reload(), b)
    record_action(b, who, "reload", "", 0, ident)
    return Steered(message=f"asked {ident} to reload")
