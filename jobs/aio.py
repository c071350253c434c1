"""Running ``async def`` jobs: one event loop per process, reused from job to job.

A reused loop keeps what a job module built on it (connection pools, clients) alive
between jobs, as an async web server's loop does; ``asyncio.run`` per job would close
them after every job. The loop runs in the main thread, so the worker's soft timeout
(SIGALRM raising ``JobTimeout``) interrupts it as it interrupts a synchronous job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Coroutine
from typing import Any

from jobs.errors import JobTimeout

_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0
_running: asyncio.Task[Any] | None = None
_timed_out = False


def event_loop() -> asyncio.AbstractEventLoop:
    """This process's job loop, created on first use (and anew in a forked child)."""
    global _loop, _loop_pid
    if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
        _loop = asyncio.new_event_loop()
        _loop.set_exception_handler(_exception_handler)
        _loop_pid = os.getpid()
        asyncio.set_event_loop(_loop)
    return _loop


def _exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A soft timeout that fired inside a loop callback (not in the job's coroutine) is
    caught by the loop and only logged: take it as a timeout of the running job."""
    global _timed_out
    if isinstance(context.get("exception"), JobTimeout) and _running is not None:
        _timed_out = True
        _running.cancel("soft timeout reached")
        return
    loop.default_exception_handler(context)


def run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to its end on the process's loop and return its value.

    A soft timeout raises ``JobTimeout`` where the coroutine is (its code running: it may
    catch it as a synchronous job does), or, while it awaits, cancels it
    (``CancelledError`` at its ``await``, so ``finally`` blocks and ``async with`` exits
    run) and then raises ``JobTimeout`` here.
    """
    global _running, _timed_out
    loop = event_loop()
    task = loop.create_task(coro)  # copies the context: jobs.current() works inside
    _running, _timed_out = task, False
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        if _timed_out:
            raise JobTimeout("soft timeout reached") from None
        raise
    except BaseException:
        if not task.done():  # interrupted while the loop waited: stop the coroutine first
            task.cancel("soft timeout reached")
            with contextlib.suppress(BaseException):
                loop.run_until_complete(task)
        raise
    finally:
        _running = None
