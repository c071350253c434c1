"""Checked by mypy --strict (tests/test_quality.py), never run: what users' type
checkers see of a ``@job`` function. Each ``type: ignore`` below must be needed: an
unused one is an error under --strict, so a decorator that typed everything as Any fails
this check."""

from typing import assert_type

from jobs import Job, JobContext, job


@job
def add(a: int, b: int) -> int:
    return a + b


@job(queue="cpu", max_attempts=5)
def shout(text: str) -> str:
    return text.upper()


def failed(ctx: JobContext, error: BaseException) -> None:
    print(ctx.job_id, ctx.meta, ctx.is_final_attempt, error)


@job(on_failure=failed)
async def fetch(url: str) -> int:
    return len(url)


async def caller() -> None:
    assert_type(await fetch("u"), int)  # called directly, an async job gives its coroutine


assert_type(add(1, 2), int)
assert_type(fetch.enqueue("u"), Job)
fetch.enqueue(3)  # type: ignore[arg-type]
job(on_failure=len)  # type: ignore[arg-type]
assert_type(shout("a"), str)
assert_type(add.enqueue(1, 2), Job)
assert_type(shout.call("a").function, str)
add("one", 2)  # type: ignore[arg-type]
shout.enqueue(3)  # type: ignore[arg-type]
