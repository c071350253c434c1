"""Loading job modules: from the working directory as users expect, and always the code
on disk (never a stale bytecode cache)."""

from __future__ import annotations

import os
import py_compile
import sys

import pytest

from jobs import Queue
from jobs.registry import registered, restore
from supervisor.errors import HaltServer
from supervisor.runtime.preload import preload
from tests.procs import jobvisor_command

VERSIONED = "from jobs import job\n\n@job\ndef version() -> str:\n    return '{}'\n"


@pytest.fixture
def clean_modules():
    before_modules, before_registry, before_path = set(sys.modules), registered(), list(sys.path)
    yield
    for name in set(sys.modules) - before_modules:
        del sys.modules[name]
    restore(before_registry)
    sys.path[:] = before_path


def test_a_module_rewritten_in_the_same_second_at_the_same_size_reloads_new_code(
        tmp_path, clean_modules):
    source = tmp_path / "same_size_rewrite.py"
    source.write_text(VERSIONED.format("v1"))
    py_compile.compile(str(source))  # the cache an earlier import or a deploy left
    preload(["same_size_rewrite"], [str(tmp_path)])
    assert registered()["same_size_rewrite:version"]() == "v1"
    stat = source.stat()
    source.write_text(VERSIONED.format("v2"))  # same size...
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...within the same second
    preload(["same_size_rewrite"], [str(tmp_path)], reload=True)
    assert registered()["same_size_rewrite:version"]() == "v2"


def test_job_modules_are_found_in_the_working_directory(tmp_path, monkeypatch, clean_modules):
    (tmp_path / "cwd_tasks.py").write_text(VERSIONED.format("here"))
    monkeypatch.chdir(tmp_path)
    preload(["cwd_tasks"], ["."])
    assert registered()["cwd_tasks:version"]() == "here"


def test_a_missing_module_error_says_where_it_looked(tmp_path, monkeypatch, clean_modules):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HaltServer) as caught:
        preload(["no_such_tasks"], [".", "lib"])
    assert "No module named 'no_such_tasks'" in caught.value.reason
    assert f"searched [worker].path {tmp_path}, {tmp_path / 'lib'}" in caught.value.reason


def test_a_module_missing_a_dependency_is_not_blamed_on_the_path(tmp_path, clean_modules):
    (tmp_path / "needs_missing.py").write_text("import no_such_dependency_here\n")
    with pytest.raises(HaltServer) as caught:
        preload(["needs_missing"], [str(tmp_path)])
    assert "No module named 'no_such_dependency_here'" in caught.value.reason
    assert "searched" not in caught.value.reason


def test_the_jobvisor_command_runs_a_module_from_its_working_directory(sup, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "mytasks.py").write_text(VERSIONED.format("from cwd"))
    assert "PYTHONPATH" not in os.environ
    r = sup(modules='["mytasks"]', cwd=app, command=jobvisor_command())
    assert Queue("default", r.broker).enqueue("mytasks:version").result(timeout=20) == "from cwd"
