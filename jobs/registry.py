"""The registry: the job functions this process has loaded, by ``module:function`` name.

Workers run only what is here: the ``@job`` functions of the modules listed in
``[worker].modules``. Kept apart from the decorator so the enqueue path can read a
function's declared options without importing the decorator (which enqueues).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobs.errors import UnknownFunction

if TYPE_CHECKING:  # annotations only: jobs.decorator imports this module
    from jobs.decorator import JobFunction

_REGISTRY: dict[str, JobFunction[Any, Any]] = {}


def register(name: str, fn: JobFunction[Any, Any]) -> None:
    _REGISTRY[name] = fn


def lookup(name: str) -> JobFunction[Any, Any]:
    """The registered function called ``name``, or ``UnknownFunction`` saying what is known."""
    fn = _REGISTRY.get(name)
    if fn is None:
        modules = sorted({n.split(":", 1)[0] for n in _REGISTRY}) or ["none"]
        raise UnknownFunction(
            f"unknown job function {name!r}: no @job with that name in the loaded modules "
            f"({', '.join(modules)}); check the name ('module:function') and [worker].modules"
        )
    return fn


def find(name: str) -> JobFunction[Any, Any] | None:
    """The registered function called ``name``, or None (no copy of the table)."""
    return _REGISTRY.get(name)


def registered() -> dict[str, JobFunction[Any, Any]]:
    return dict(_REGISTRY)


def restore(snapshot: dict[str, JobFunction[Any, Any]]) -> None:
    """Put the registry back as ``registered()`` returned it (a refused reload)."""
    _REGISTRY.clear()
    _REGISTRY.update(snapshot)

