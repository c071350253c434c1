"""One error tree for the job library: every error says what was wrong and what to do."""

from __future__ import annotations


class JobsError(Exception):
    """Root of every error raised by the job library."""


class ConfigurationError(JobsError, ValueError):
    """A setting or option has a value the library cannot use."""


class BrokerUnavailable(JobsError, ConnectionError):
    """Redis could not be reached; the message names the URL without its password."""


class BrokerError(JobsError):
    """Redis answered with an error (out of memory, no permission, read-only replica, ...)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code  # the server's error code: OOM, NOPERM, READONLY, WRONGTYPE, ...


class PayloadTooLarge(JobsError, ValueError):
    """The encoded arguments exceed ``max_payload_bytes``."""


class JobNotFound(JobsError, LookupError):
    """No job with that id exists (never enqueued, purged, or expired)."""


class JobFailed(JobsError):
    """The job ended ``dead``: every attempt failed or the failure was permanent."""

    def __init__(self, job_id: str, message: str) -> None:
        super().__init__(f"job {job_id} is dead: {message}")
        self.job_id = job_id


class JobCanceled(JobsError):
    """The job was canceled before it could finish."""

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(f"job {job_id} was canceled: {reason}")
        self.job_id = job_id


class ScheduleNotFound(JobsError, LookupError):
    """No schedule of that name: not in a live supervisor's config.toml, not added."""


class ResultTimeout(JobsError, TimeoutError):
    """The job did not finish within the time given to ``Job.result``."""


class UnknownFunction(JobsError, LookupError):
    """A job names a function that no ``@job`` in the loaded modules registered."""


class UnknownLimit(JobsError, LookupError):
    """A job names a limit that is not defined (``jobs.limits.set_limit`` or config.toml)."""

    def __init__(self, name: str, job_id: str = "") -> None:
        of = f" (named by job {job_id})" if job_id else ""
        super().__init__(
            f"limit {name!r}{of} is not defined: define it with jobs.limits.set_limit("
            f"{name!r}, rate_limit=..., max_concurrency=...) or a [limits.{name}] table in "
            "config.toml (a supervisor publishes it at start), or leave it out of limits=; "
            "nothing was enqueued")
        self.name = name


class DecryptionError(JobsError):
    """An encrypted payload cannot be read here: its key is not among this process's
    keys, or the key is wrong or the data was altered (``jobs.encryption``)."""

    def __init__(self, message: str, key_id: str = "") -> None:
        super().__init__(message)
        self.key_id = key_id


class StaleToken(JobsError):
    """An outcome was written with a claim token that is no longer the job's."""


class Retry(Exception):
    """Raise inside a job to retry it after ``after`` seconds (spends an attempt)."""

    def __init__(self, after: float | None = None, message: str = "retry requested") -> None:
        super().__init__(message)
        self.after = after


class Fail(Exception):
    """Raise inside a job to fail it for good: no further attempts, straight to ``dead``."""


class JobTimeout(Exception):
    """Raised inside a job when its soft timeout passes, so it can clean up."""


class JobKilled(JobsError):
    """What ``on_failure`` receives when the last attempt raised nothing it could pass on:
    its worker was killed (hard timeout), crashed, or was lost. ``kind`` says which
    (``timeout``, ``crash``, ``lost``), the message says why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
