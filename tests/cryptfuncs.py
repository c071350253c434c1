"""Job functions with encrypted payloads (imported by test processes and supervisors)."""

from __future__ import annotations

from jobs import job

MARKER = "zebra-7f3c-secret"  # a string a scan of Redis must never find in clear


@job(encrypt=True)
def greet(name: str, *, greeting: str = "hello") -> str:
    return f"{greeting}, {name}"


@job(encrypt=True, max_attempts=1)
def refuse(secret: str) -> None:
    raise ValueError(f"cannot handle {secret}")


@job(encrypt=True)
def plus_one(n: int) -> int:
    return n + 1


@job(encrypt=True)
def echo(value: str) -> str:
    return value
