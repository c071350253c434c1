"""Settings from the environment and from the supervisor's config file.

The supervisor and a producer script must agree on where Redis is and on the
namespace, or jobs sit ``queued`` forever. So both read the same sources, in the same
order: the file named by ``JOBVISOR_CONFIG`` (the supervisor also takes ``--config``
or ``./config.toml``), then ``JOBVISOR_<TABLE>_<KEY>`` variables, which win. The job
library reads only the ``[redis]``, ``[defaults]``, ``[scheduler]`` and ``[encryption]``
tables; the supervisor's loader reads them all through the same functions, so an
override means the same everywhere and an error names the variable that caused it.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from jobs.errors import ConfigurationError
from jobs.settings import EncryptionSettings, JobDefaults, RedisSettings, SchedulerSettings

PREFIX = "JOBVISOR_"
# Read where they are used, never stored in a config object (secrets), or not settings.
NOT_OVERRIDES = {"JOBVISOR_CONFIG", "JOBVISOR_REDIS_PASSWORD",
                 "JOBVISOR_REDIS_SENTINEL_PASSWORD", "JOBVISOR_ENCRYPTION_KEYS"}
_AT = re.compile(r" - at `\$\.([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)")

Sources = dict[tuple[str, str], str]  # (table, key) -> the variable that set it


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A config file's tables; errors name the file and what is wrong with it."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigurationError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigurationError(f"config file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None


def apply_overrides(data: dict[str, Any], tables: dict[str, type[msgspec.Struct]]) -> Sources:
    """Merge ``JOBVISOR_<TABLE>_<KEY>=value`` (TOML value syntax, or a bare string) into
    ``data``; a variable naming a key the table lacks is refused, naming the variable."""
    sources: Sources = {}
    for name, raw in sorted(os.environ.items()):
        if not name.startswith(PREFIX) or name in NOT_OVERRIDES:
            continue
        rest = name[len(PREFIX):].lower()
        table = next((t for t in tables if rest.startswith(t + "_")), None)
        if table is None:
            continue  # not a table of ours: JOBVISOR_CONFIG-like names of other tools
        key = rest[len(table) + 1:]
        fields = tables[table].__struct_fields__
        if key not in fields:
            near = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {PREFIX}{table.upper()}_{near[0].upper()}?)" if near else ""
            raise ConfigurationError(
                f"environment variable {name}: [{table}] has no key {key!r}{hint}; "
                f"its keys are {', '.join(fields)}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        data.setdefault(table, {})[key] = value
        sources[(table, key)] = name
    return sources


def explain(exc: msgspec.ValidationError, sources: Sources, path: object | None) -> str:
    """A validation error, naming the environment variable when one set the bad key."""
    text = str(exc)
    match = _AT.search(text)
    if match and (match[1], match[2]) in sources:
        name = sources[(match[1], match[2])]
        return f"environment variable {name}={os.environ.get(name, '')!r}: {text}"
    return f"config file {path}: {text}" if path else f"configuration: {text}"


def refuse_keys_in_file(data: dict[str, Any], path: object | None) -> None:
    """Encryption keys never come from the config file, which is rarely kept secret."""
    table = data.get("encryption")
    if isinstance(table, dict) and {"keys", "key"} & set(table):
        raise ConfigurationError(
            f"{path or 'configuration'}: encryption keys are not allowed in the config file; "
            "set JOBVISOR_ENCRYPTION_KEYS or name a file of keys (mode 600) in "
            "[encryption] key_file")


class LibrarySettings(msgspec.Struct, frozen=True, kw_only=True):
    """The tables the job library uses; other tables of the file are the supervisor's."""

    redis: RedisSettings = RedisSettings()
    defaults: JobDefaults = JobDefaults()
    scheduler: SchedulerSettings = SchedulerSettings()
    encryption: EncryptionSettings = EncryptionSettings()
    data_dir: str | None = None  # [supervisor].data_dir: where the embedded server listens


def library_settings() -> LibrarySettings:
    """``[redis]``, ``[defaults]``, ``[scheduler]`` and ``[encryption]`` as the supervisor
    sees them: ``JOBVISOR_CONFIG``'s file, then the environment's overrides."""
    path = os.environ.get("JOBVISOR_CONFIG") or None
    found = read_toml(path) if path else {}
    tables: dict[str, type[msgspec.Struct]] = {
        "redis": RedisSettings, "defaults": JobDefaults, "scheduler": SchedulerSettings,
        "encryption": EncryptionSettings}
    refuse_keys_in_file(found, path)
    data: dict[str, Any] = {t: found[t] for t in tables if t in found}
    sources = apply_overrides(data, tables)
    data_dir = os.environ.get("JOBVISOR_SUPERVISOR_DATA_DIR") or found.get(
        "supervisor", {}).get("data_dir")
    if data_dir is not None:
        data["data_dir"] = data_dir
    try:
        return msgspec.convert(data, LibrarySettings)
    except msgspec.ValidationError as exc:
        raise ConfigurationError(explain(exc, sources, path)) from None
