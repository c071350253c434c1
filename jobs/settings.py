"""Settings the job library needs: where Redis is and the defaults jobs fall back to.

These are the ``[redis]`` and ``[defaults]`` tables of ``config.toml``; the
supervisor's loader embeds them in the full configuration.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from jobs.backoff import Backoff

Seconds = Annotated[float, Meta(gt=0, le=10 * 365 * 86400)]


class Table(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every config table: typed, immutable, unknown keys refused."""


class RedisSettings(Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str = ""
    namespace: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")] = "jobvisor"
    password_file: str = ""
    socket_timeout: Seconds = 5.0
    connect_timeout: Seconds = 5.0
    events_max_len: Annotated[int, Meta(ge=0, le=10_000_000)] = 10_000


class JobDefaults(Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    timeout: Seconds = 300.0
    soft_timeout: Annotated[float, Meta(ge=0)] = 0.0
    max_attempts: Annotated[int, Meta(ge=1, le=1000)] = 3
    backoff: Backoff = Backoff()
    result_ttl: Seconds = 86400.0
    max_completed: Annotated[int, Meta(ge=1, le=100_000_000)] = 10_000
    dead_ttl: Seconds = 7 * 86400.0
    max_dead: Annotated[int, Meta(ge=1, le=100_000_000)] = 100_000
    max_payload_bytes: Annotated[int, Meta(ge=64, le=512 * 1024 * 1024)] = 1024 * 1024
