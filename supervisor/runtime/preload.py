"""Importing the job modules: in the supervisor before forking (children share them
copy-on-write), and again on reload so a rolling restart runs new code.

Job modules are compiled from their source on every (re)load, never taken from a
``.pyc``: Python trusts a cached ``.pyc`` whose recorded source mtime (whole seconds)
and size match the file, so a deploy that rewrites a module within the same second at
the same size, then reloads, would run the old code. Compiling the job modules costs
milliseconds once per load, in the supervisor only.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from types import CodeType, ModuleType

from jobs.effective import FunctionOptions, describe
from jobs.registry import registered, restore
from jobs.settings import JobDefaults
from supervisor.errors import ExitCode, HaltServer

log = logging.getLogger(__name__)


class SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """A source file loader that never reads (nor writes) bytecode caches."""

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


class JobSourceFinder(importlib.abc.MetaPathFinder):
    """Finds modules of the job packages as the path finder does, loading them from source."""

    def __init__(self) -> None:
        self.roots: set[str] = set()

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".", 1)[0] not in self.roots:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        loader = spec.loader if spec else None
        if spec is not None and type(loader) is importlib.machinery.SourceFileLoader:
            spec.loader = SourceOnlyLoader(loader.name, loader.path)
        return spec


_finder = JobSourceFinder()


def _packages(modules: list[str]) -> set[str]:
    return {m.split(".", 1)[0] for m in modules} - {"jobs", "supervisor"}


_added_paths: list[str] = []


def set_import_path(paths: Sequence[str]) -> list[str]:
    """Put ``[worker].path`` (relative to the working directory, as Celery and RQ put
    the working directory) first on ``sys.path``, replacing what an earlier load put."""
    wanted = [os.path.abspath(p) for p in paths]
    for entry in _added_paths:
        if entry in sys.path:
            sys.path.remove(entry)
    _added_paths[:] = [p for p in wanted if p not in sys.path]
    sys.path[:0] = _added_paths
    return wanted


def preload(modules: list[str], paths: Sequence[str] = (), reload: bool = False) -> None:
    """Import ``modules``; on reload, drop their packages first and restore them on error."""
    searched = set_import_path(paths)
    saved: dict[str, ModuleType] = {}
    registry = registered()
    roots = _packages(modules)
    _finder.roots |= roots
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    if reload:
        for name in list(sys.modules):
            if name.split(".", 1)[0] in roots:
                saved[name] = sys.modules.pop(name)
        importlib.invalidate_caches()
    try:
        for name in modules:
            importlib.import_module(name)
    except BaseException as exc:
        sys.modules.update(saved)
        restore(registry)  # modules imported before the failing one re-registered jobs
        detail = "".join(traceback.format_exception_only(exc)).strip()
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        if missing and (name == missing or name.startswith(missing + ".")):
            detail += (f" (searched [worker].path {', '.join(searched) or '(empty)'}, then "
                       "PYTHONPATH and the installed packages: put the module there, or "
                       "add its directory to [worker].path)")
        raise HaltServer(f"cannot import job module {name!r}: {detail}",
                         ExitCode.BOOT_ERROR) from None


def loaded_functions(defaults: JobDefaults) -> dict[str, FunctionOptions]:
    """The registered functions' effective options, for the supervisor to publish."""
    return {name: describe(fn, defaults) for name, fn in registered().items()}
