"""`jobs` is the library producers import: it must never pull in the runtime."""

import ast
from pathlib import Path

FORBIDDEN = {"supervisor", "signal", "setproctitle"}


def test_jobs_never_imports_the_runtime():
    offenders = []
    for path in Path("jobs").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
            if isinstance(node, ast.Attribute) and node.attr == "fork":
                offenders.append(f"{path}: os.fork")
    assert offenders == []


def test_no_pickle_anywhere():
    for package in ("jobs", "supervisor"):
        for path in Path(package).rglob("*.py"):
            text = path.read_text()
            assert "import pickle" not in text and "cloudpickle" not in text, path
