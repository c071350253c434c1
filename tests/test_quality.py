"""The code base stays typed and lint-clean: mypy --strict and ruff run as part of the suite."""

import subprocess
import sys


def test_mypy_strict_clean():
    out = subprocess.run([sys.executable, "-m", "mypy"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_clean():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "."], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_job_functions_keep_their_types_for_users_type_checkers():
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "tests/typing_usage.py"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
