"""Errors and exit codes of the runtime."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    CONFIG_ERROR = 2
    BOOT_ERROR = 3
    REDIS_UNAVAILABLE = 4
    RECYCLE = 5
    JOB_DEAD = 10
    JOB_CANCELED = 11
    JOB_NOT_DONE = 12


class SupervisorError(Exception):
    """Root of the runtime's errors; messages say what was wrong and what to do."""


class ConfigError(SupervisorError):
    """config.toml (or an override) is missing, unreadable or invalid."""


class HaltServer(BaseException):
    """Stop the supervisor with an exit code (e.g. after repeated boot failures)."""

    def __init__(self, reason: str, code: ExitCode) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
