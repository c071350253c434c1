"""Rate limits and cluster-wide concurrency limits: a function's own, a queue's, and named
limits shared by any functions and jobs that name them.

A limit is checked atomically when a worker claims a job (``claim_job``, in
``jobs/store/lua/_claim_job.lua``). A job the limit holds back stays ``queued`` but leaves
the queue's index for the limit's held set, so the jobs behind it run; it goes back in its
old place when a running job of the limit finishes or the rate lets another start (the
promoter: ``release_due_limits``, in ``_limits.lua``).

A rate ``"<count>/<period>"`` is a sliding window: at most ``count`` starts in any window
of the period, however they bunch (the last ``count`` start times are kept per limit,
about 10 bytes each). With ``burst=B`` it is a token bucket of ``B`` tokens refilled at
``count`` per period instead: up to ``B`` start at once, then they are spaced evenly, so a
window of the period may see up to ``B + count - 1`` starts (``burst=1``: evenly spaced).
"""

from __future__ import annotations

from typing import Any

import msgspec

from jobs.errors import ConfigurationError
from jobs.rates import DECLARED, definition, read_definition
from jobs.registry import registered
from jobs.store.broker import Broker, default_broker
from jobs.store.connection import translated
from jobs.store.keys import check_name

# Fields of the definitions hash that are not limits: the named limits a function is
# under (``fl:<function>`` -> ``"a|b declared"``), published with its limits.
ATTACHED = "fl:"


class LimitStatus(msgspec.Struct, frozen=True, kw_only=True):
    name: str  # "fn:<function>", "q:<queue>" or "n:<name>"
    rate: str  # "100/60s", or "" for no rate limit
    burst: int  # 0: sliding window (at most the count in any window); else a token bucket
    max_concurrency: int  # 0: no concurrency limit
    running: int
    held: int
    declared: bool  # from @job or config.toml (published by supervisors), else set_limit


def _name(name: str | None, queue: str | None, function: str | None) -> str:
    if sum(x is not None for x in (name, queue, function)) != 1:
        raise ConfigurationError(
            "give exactly one of a limit's name, queue= or function=, such as "
            "set_limit('github-api', rate_limit='5000/h')")
    if queue is not None:
        return f"q:{check_name('queue', queue)}"
    if function is not None:
        return f"fn:{function}"
    assert name is not None
    return f"n:{check_name('limit name', name)}"


def set_limit(name: str | None = None, /, *, queue: str | None = None,
              function: str | None = None, rate_limit: str | None = None,
              max_concurrency: int | None = None, burst: int | None = None,
              broker: Broker | None = None) -> None:
    """Define a named limit (``set_limit("github-api", rate_limit="5000/h")``), or limit a
    queue or a function, across the cluster; no rate and no concurrency removes it.

    A named limit holds for every job that names it, queued ones included; a queue or
    function limit for the jobs enqueued from now on (jobs already queued do not carry it).
    """
    broker = broker or default_broker()
    field = _name(name, queue, function)
    value = definition(rate_limit, max_concurrency, burst)
    with translated(broker.url):
        if value is None:
            broker.client.hdel(broker.keys.limits(), field)
            broker.client.zadd(broker.keys.limits_due(), {field: 0})  # release what it held
        else:
            broker.client.hset(broker.keys.limits(), field, value)


def publish(broker: Broker, definitions: dict[str, str | None]) -> list[str]:
    """Write declared limits by name (``fn:<function>``, ``q:<queue>``, ``n:<name>``, and
    ``fl:<function>`` for the named limits a function is under); None removes one.

    A supervisor publishes its modules' function limits and its config's queue and named
    limits at start and on reload; a declared limit wins over one set with ``set_limit``.
    None removes only a declared limit (one taken out of the code or the config), never
    one set with ``set_limit``. A removed limit lets the jobs it held go.
    Returns the named limits functions are under that are not defined (their jobs are
    refused at enqueue until they are).
    """
    with translated(broker.url):
        stored = broker.client.hgetall(broker.keys.limits())
        defined = {k.decode() for k in stored}
        pipe = broker.client.pipeline(transaction=False)
        for name, value in definitions.items():
            if value is not None:
                pipe.hset(broker.keys.limits(), name, value + DECLARED)
                defined.add(name)
            elif stored.get(name.encode(), b"").endswith(DECLARED.encode()):
                pipe.hdel(broker.keys.limits(), name)
                pipe.zadd(broker.keys.limits_due(), {name: 0})
                defined.discard(name)
        pipe.execute()
    attached = {n for k, v in definitions.items() if v and k.startswith(ATTACHED)
                for n in v.split("|")}
    return sorted(n for n in attached if f"n:{n}" not in defined)


def status(broker: Broker | None = None) -> list[LimitStatus]:
    """Every limit with its running and held job counts."""
    broker = broker or default_broker()
    with translated(broker.url):
        defs: dict[bytes, bytes] = broker.client.hgetall(broker.keys.limits())
        pipe = broker.client.pipeline(transaction=False)
        names = sorted(k.decode() for k in defs if not k.startswith(ATTACHED.encode()))
        for name in names:
            pipe.scard(f"{broker.keys.limit(name)}:active")
            pipe.zcard(broker.keys.limit_held(name))
        counts: list[Any] = pipe.execute()
    out = []
    for i, name in enumerate(names):
        d = read_definition(defs[name.encode()].decode())
        out.append(LimitStatus(name=name, rate=d.rate, burst=d.burst, max_concurrency=d.most,
                               running=counts[2 * i], held=counts[2 * i + 1],
                               declared=d.declared))
    return out


def registered_limits() -> dict[str, str | None]:
    """The limits of every function registered in this process (None: unlimited), and the
    named limits each is under."""
    out: dict[str, str | None] = {}
    for name, fn in registered().items():
        out[f"fn:{name}"] = fn.job_options.limit
        out[f"{ATTACHED}{name}"] = "|".join(fn.job_options.limits) or None
    return out
