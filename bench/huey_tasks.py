"""The no-op task Huey runs in ``bench.peers``, and the module its consumer imports.

The consumer process (``huey_consumer bench.huey_tasks.huey``) takes the server's URL
and the instance's name from the environment; the benchmark builds the same instance
with ``build``.
"""

from __future__ import annotations

import os
from typing import Any

from huey import RedisHuey


def noop() -> None:
    return None


def build(url: str | None, name: str) -> tuple[RedisHuey, Any]:
    """A Huey instance on ``url`` named ``name``, and its no-op task."""
    instance = RedisHuey(name, url=url)
    return instance, instance.task(name="noop")(noop)


huey, task = build(os.environ.get("JOBVISOR_BENCH_HUEY_URL"),
                   os.environ.get("JOBVISOR_BENCH_HUEY_NAME", "bench"))
