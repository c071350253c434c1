"""Settings the job library needs: where Redis is and the defaults jobs fall back to.

These are the ``[redis]`` and ``[defaults]`` tables of ``config.toml``; the
supervisor's loader embeds them in the full configuration.
"""

from __future__ import annotations

import ssl
from functools import cache
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import Meta

from jobs.backoff import Backoff
from jobs.errors import ConfigurationError

Seconds = Annotated[float, Meta(gt=0, le=10 * 365 * 86400)]


class Table(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every config table: typed, immutable, unknown keys refused."""


class RedisSettings(Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[redis]``: where the server is and how to reach it safely.

    The TLS files are checked when the settings are built (read, parsed, key matches
    certificate), so a bad path is refused with the key's name at load or reload
    time, not as a handshake failure in every worker later.
    """

    url: str = ""
    namespace: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")] = "jobvisor"
    password_file: str = ""
    socket_timeout: Seconds = 5.0
    connect_timeout: Seconds = 5.0
    events_max_len: Annotated[int, Meta(ge=0, le=10_000_000)] = 10_000
    # TLS (rediss:// and rediss+sentinel://): PEM files; empty CA = the system's CAs.
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_check_hostname: bool = True
    # Sentinel (redis+sentinel://): the sentinels' own password, when they require one.
    sentinel_password_file: str = ""

    def __post_init__(self) -> None:
        check_tls_files(self)

    @property
    def tls_configured(self) -> bool:
        return bool(self.tls_ca_file or self.tls_cert_file or self.tls_key_file)


QueueName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:\-]{1,128}$")]


class JobDefaults(Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[defaults]``: what a job falls back to when neither its enqueue nor its ``@job``
    sets an option. ``default_queue`` is another name for ``queue``."""

    queue: QueueName = "default"
    default_queue: QueueName | None = None
    timeout: Seconds = 300.0
    soft_timeout: Annotated[float, Meta(ge=0)] = 0.0
    max_attempts: Annotated[int, Meta(ge=1, le=1000)] = 3
    backoff: Backoff = Backoff()
    result_ttl: Seconds = 86400.0
    max_completed: Annotated[int, Meta(ge=1, le=100_000_000)] = 10_000
    dead_ttl: Seconds = 7 * 86400.0
    max_dead: Annotated[int, Meta(ge=1, le=100_000_000)] = 100_000
    max_payload_bytes: Annotated[int, Meta(ge=64, le=512 * 1024 * 1024)] = 1024 * 1024

    def __post_init__(self) -> None:
        if self.default_queue is None or self.default_queue == self.queue:
            return
        if self.queue != "default":
            raise ValueError(
                f"defaults.queue ({self.queue!r}) and defaults.default_queue "
                f"({self.default_queue!r}) are two names for one setting: keep one")
        msgspec.structs.force_setattr(self, "queue", self.default_queue)


class SchedulerSettings(Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[scheduler]``: cron schedules (``jobs.schedules``).

    ``enabled = false`` keeps a supervisor from firing any schedule (others sharing the
    namespace still do). ``timezone`` is the zone of a schedule that names none, fixed
    when the schedule is defined: when config.toml is loaded for ``[[schedules]]``, by
    ``schedules.add`` for one stored in Redis (from ``JOBVISOR_CONFIG`` as ``[defaults]``
    is); so a stored schedule has its ticks on every supervisor, whatever their tables say.
    """

    enabled: bool = True
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        zone(self.timezone)


class EncryptionSettings(Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[encryption]``: payload encryption at rest (``jobs.encryption``).

    The keys themselves never sit here: ``JOBVISOR_ENCRYPTION_KEYS`` or the file named
    by ``key_file`` holds them, read where they are used.
    """

    encrypt_all: bool = False  # every job, not only those of @job(encrypt=True)
    key_file: str = ""  # one "id:base64" key per line, newest first, mode 600
    # Error messages and tracebacks of encrypted jobs stored in clear (readable by
    # anyone who can read Redis); false: encrypted like the arguments.
    clear_errors: bool = False


@cache
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None


def _no_passphrase() -> str:
    # Called by OpenSSL for an encrypted key: refuse instead of prompting on a terminal.
    raise ConfigurationError("the key is encrypted; jobvisor takes no passphrase")


def _readable(key: str, path: str) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise ConfigurationError(
            f"redis.{key} {path!r} cannot be read: {exc.strerror or exc}") from None


def check_tls_files(settings: RedisSettings) -> None:
    """Refuse unreadable or unusable TLS files, naming the ``[redis]`` key at fault."""
    if settings.tls_key_file and not settings.tls_cert_file:
        raise ConfigurationError(
            "redis.tls_key_file is set without redis.tls_cert_file: give the client "
            "certificate the key belongs to")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if settings.tls_ca_file:
        _readable("tls_ca_file", settings.tls_ca_file)
        try:
            context.load_verify_locations(cafile=settings.tls_ca_file)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigurationError(
                f"redis.tls_ca_file {settings.tls_ca_file!r} holds no usable PEM CA "
                f"certificate: {exc}") from None
    if settings.tls_cert_file:
        _readable("tls_cert_file", settings.tls_cert_file)
        if settings.tls_key_file:
            _readable("tls_key_file", settings.tls_key_file)
        try:
            context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file or None,
                                    password=_no_passphrase)
        except (ssl.SSLError, ConfigurationError) as exc:
            where = "redis.tls_cert_file" + (" / tls_key_file" if settings.tls_key_file else "")
            raise ConfigurationError(
                f"{where}: cannot load the client certificate and its key ({exc}); both "
                "must be PEM, the key unencrypted and matching the certificate (or inside "
                "the certificate file when tls_key_file is empty)") from None
