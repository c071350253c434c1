"""Job functions for async jobs, on_failure hooks and the job context (imported by test
processes and supervisors alike)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import jobs
from jobs import Fail, JobContext, JobTimeout, job
from tests.jobfuncs import NO_BACKOFF, append_line

HOOK_CALLS: list[dict[str, Any]] = []  # hooks called in this process, when no file is named


def note_failure(ctx: JobContext, error: BaseException) -> None:
    """Records the call: to the file ``ctx.meta["hook_file"]`` names, else ``HOOK_CALLS``."""
    call = {"id": ctx.job_id, "attempt": ctx.attempt, "final": ctx.is_final_attempt,
            "type": type(error).__name__, "message": str(error),
            "kind": getattr(error, "kind", None), "current": jobs.current().job_id,
            "pid": os.getpid()}
    path = ctx.meta.get("hook_file")
    if path:
        append_line(path, json.dumps(call))
    else:
        HOOK_CALLS.append(call)


def broken_hook(ctx: JobContext, error: BaseException) -> None:
    note_failure(ctx, error)
    raise RuntimeError("the hook itself failed")


def hanging_hook(ctx: JobContext, error: BaseException) -> None:
    note_failure(ctx, error)
    while True:
        pass


async def async_hook(ctx: JobContext, error: BaseException) -> None:
    await asyncio.sleep(0.01)
    note_failure(ctx, error)


@job(max_attempts=2, backoff=NO_BACKOFF, on_failure=note_failure)
def fails_twice() -> None:
    raise ValueError("boom")


@job(max_attempts=3, on_failure=broken_hook)
def fails_for_good() -> None:
    raise Fail("cannot ever work")


@job(max_attempts=1, on_failure=async_hook)
async def async_fails() -> None:
    raise KeyError("gone")


@job(timeout=1, max_attempts=1, on_failure=note_failure)
def runaway_with_hook() -> None:
    while True:
        pass


@job(timeout=1, max_attempts=1, on_failure=hanging_hook)
def fails_into_hanging_hook() -> None:
    raise ValueError("fails fast")


@job
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0.01)
    return a + b


@job
async def loop_identity() -> list[int]:
    """The loop's id, this process's pid and how many jobs this loop has run."""
    loop = asyncio.get_running_loop()
    seen = getattr(loop, "jobs_seen", 0) + 1
    loop.jobs_seen = seen  # type: ignore[attr-defined]
    return [id(loop), os.getpid(), seen]


@job(timeout=10, soft_timeout=0.5, max_attempts=1)
async def async_sleeps_past_soft(path: str) -> str:
    """Awaits past its soft timeout; the cancel reaches it at the await, cleanup runs."""
    try:
        await asyncio.sleep(30)
    finally:
        append_line(path, "cleaned up")
    return "not reached"


@job(timeout=10, soft_timeout=0.5, max_attempts=1)
async def async_spins_past_soft() -> str:
    """Runs code (no await) past its soft timeout: JobTimeout is raised where it is."""
    try:
        while True:
            pass
    except JobTimeout:
        await asyncio.sleep(0)
        return "cleaned up"


@job(timeout=1, max_attempts=1)
async def async_runaway() -> None:
    await asyncio.sleep(60)


@job(max_attempts=1)
async def async_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@job(max_attempts=1)
async def async_progress(ctx: JobContext, steps: int, pause: float) -> int:
    for i in range(steps):
        ctx.progress(i + 1, steps, f"step {i + 1}")
        await asyncio.sleep(pause)
    return jobs.current().attempt * steps


@job(max_attempts=2, backoff=NO_BACKOFF)
def context_fields(ctx: JobContext, fail_first: bool = False) -> dict[str, Any]:
    if fail_first and ctx.attempt == 1:
        raise ValueError("first attempt fails")
    return {"attempt": ctx.attempt, "max_attempts": ctx.max_attempts,
            "final": ctx.is_final_attempt, "enqueued_at": ctx.enqueued_at.timestamp(),
            "started_at": ctx.started_at.timestamp(), "tz": str(ctx.started_at.tzinfo),
            "meta": ctx.meta}
