"""Rate limits and cluster-wide concurrency limits, per function or per queue.

A limit is checked atomically when a worker claims a job (``claim_job``, in
``jobs/store/lua/_claim_job.lua``). A job the limit holds back stays ``queued`` but leaves
the queue's index for the limit's held set, so the jobs behind it run; it goes back in its
old place when a running job of the limit finishes or the bucket has tokens again (the
promoter: ``release_due_limits``, in ``_limits.lua``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from jobs.errors import ConfigurationError
from jobs.rates import DECLARED, definition
from jobs.registry import registered
from jobs.store.broker import Broker, default_broker
from jobs.store.connection import translated
from jobs.store.keys import check_name


class LimitStatus(msgspec.Struct, frozen=True, kw_only=True):
    name: str  # "fn:<function>" or "q:<queue>"
    rate: str  # "100/60s", or "" for no rate limit
    max_concurrency: int  # 0: no concurrency limit
    running: int
    held: int
    declared: bool  # from @job or config.toml (published by supervisors), else set_limit


def _name(queue: str | None, function: str | None) -> str:
    if (queue is None) == (function is None):
        raise ConfigurationError("give exactly one of queue= or function=")
    if queue is not None:
        return f"q:{check_name('queue', queue)}"
    assert function is not None
    return f"fn:{function}"


def set_limit(*, queue: str | None = None, function: str | None = None,
              rate_limit: str | None = None, max_concurrency: int | None = None,
              broker: Broker | None = None) -> None:
    """Limit a queue or a function across the cluster; both None removes the limit.

    Jobs enqueued from now on carry the limit (jobs already queued do not).
    """
    broker = broker or default_broker()
    name = _name(queue, function)
    value = definition(rate_limit, max_concurrency)
    with translated(broker.url):
        if value is None:
            broker.client.hdel(broker.keys.limits(), name)
            broker.client.zadd(broker.keys.limits_due(), {name: 0})  # release what it held
        else:
            broker.client.hset(broker.keys.limits(), name, value)


def publish(broker: Broker, definitions: dict[str, str | None]) -> None:
    """Write declared limits by name (``fn:<function>``, ``q:<queue>``); None removes one.

    A supervisor publishes its modules' function limits and its config's queue limits
    at start and on reload; a declared limit wins over one set with ``set_limit``.
    None removes only a declared limit (one taken out of the code or the config), never
    one set with ``set_limit``. A removed limit lets the jobs it held go.
    """
    with translated(broker.url):
        stored = broker.client.hgetall(broker.keys.limits())
        pipe = broker.client.pipeline(transaction=False)
        for name, value in definitions.items():
            if value is not None:
                pipe.hset(broker.keys.limits(), name, value + DECLARED)
            elif stored.get(name.encode(), b"").endswith(DECLARED.encode()):
                pipe.hdel(broker.keys.limits(), name)
                pipe.zadd(broker.keys.limits_due(), {name: 0})
        pipe.execute()


def status(broker: Broker | None = None) -> list[LimitStatus]:
    """Every limit with its running and held job counts."""
    broker = broker or default_broker()
    with translated(broker.url):
        defs: dict[bytes, bytes] = broker.client.hgetall(broker.keys.limits())
        pipe = broker.client.pipeline(transaction=False)
        names = sorted(k.decode() for k in defs)
        for name in names:
            pipe.scard(f"{broker.keys.limit(name)}:active")
            pipe.zcard(broker.keys.limit_held(name))
        counts: list[Any] = pipe.execute()
    out = []
    for i, name in enumerate(names):
        raw = defs[name.encode()].decode()
        count, period, most = (int(x) for x in raw.split()[:3])
        out.append(LimitStatus(name=name, rate=f"{count}/{period / 1000:g}s" if count else "",
                               max_concurrency=most, running=counts[2 * i],
                               held=counts[2 * i + 1], declared=raw.endswith(DECLARED)))
    return out


def registered_limits() -> dict[str, str | None]:
    """The limit of every function registered in this process (None: unlimited)."""
    return {f"fn:{name}": fn.job_options.limit for name, fn in registered().items()}
