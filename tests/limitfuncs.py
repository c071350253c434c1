"""Job functions under rate limits and named limits (only the limit tests load these: a
supervisor loading them publishes their limits and warns about undefined names)."""

from __future__ import annotations

from jobs import job


@job(rate_limit="10/s")
def paced(tag: int) -> int:
    return tag


@job(limits="shared-api")
def fetch(n: int) -> int:
    return n


@job(limits=["shared-api"], max_concurrency=5)
def upload(n: int) -> int:
    return n


@job(limits=["config-api"])
def call_api(n: int) -> int:
    return n


@job(limits=["never-defined"])
def orphan() -> None:
    """Names a limit no one defines: its enqueues are refused."""
