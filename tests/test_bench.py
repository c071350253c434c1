"""The benchmark suite runs (tiny sizes, no timing assertions: speed is measured, not tested)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import TARGETS

ROOT = Path(__file__).parent.parent


@pytest.mark.timeout(300)
def test_bench_smoke_runs_every_scenario(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--json", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data["results"]) == set(TARGETS)
    for name, figures in TARGETS.items():
        for figure, _, _ in figures:
            value = data["results"][name][figure]
            assert set(value) == {"median", "min", "max"} and value["min"] <= value["max"]
    assert "scenario" in run.stdout and data["meta"]["mode"] == "smoke"
    # No herd: an enqueue hands its wake token to one waiting worker at most (none when
    # a worker ending its idle wait claims the job first).
    assert data["results"]["idle_fleet"]["wakeups_per_enqueue"]["max"] <= 1.0


@pytest.mark.timeout(300)
def test_bench_dashboard_runs_on_a_small_queue(tmp_path):
    out = tmp_path / "dashboard.json"
    run = subprocess.run([sys.executable, "-m", "bench.dashboard", "--dead", "300",
                          "--repeats", "1", "--json", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["dead"] == 300 and data["memory"]["rss_mib_peak"] > 0
    first = data["figures"]["dead list API, first"]
    assert first["jobs"] == 50 and first["median_ms"] <= first["max_ms"]
    assert data["figures"]["dead groups API (newest 10,000)"]["complete"] is True
