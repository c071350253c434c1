"""Importing the job modules: in the supervisor before forking (children share them
copy-on-write), and again on reload so a rolling restart runs new code."""

from __future__ import annotations

import importlib
import logging
import sys
import traceback

from jobs.registry import registered, restore
from supervisor.errors import ExitCode, HaltServer

log = logging.getLogger(__name__)


def _packages(modules: list[str]) -> set[str]:
    return {m.split(".", 1)[0] for m in modules} - {"jobs", "supervisor"}


def preload(modules: list[str], reload: bool = False) -> None:
    """Import ``modules``; on reload, drop their packages first and restore them on error."""
    saved: dict[str, object] = {}
    registry = registered()
    if reload:
        roots = _packages(modules)
        for name in list(sys.modules):
            if name.split(".", 1)[0] in roots:
                saved[name] = sys.modules.pop(name)
        importlib.invalidate_caches()
    try:
        for name in modules:
            importlib.import_module(name)
    except BaseException as exc:
        sys.modules.update(saved)  # type: ignore[arg-type]
        restore(registry)  # modules imported before the failing one re-registered jobs
        detail = "".join(traceback.format_exception_only(exc)).strip()
        raise HaltServer(f"cannot import job module {name!r}: {detail}",
                         ExitCode.BOOT_ERROR) from None
