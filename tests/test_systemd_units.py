"""The shipped unit files: offline `systemd-analyze verify` plus the directives we rely on.

`systemd-analyze verify` exits 1 on this kind of machine for a reason that is not a
mistake in the unit: the installed command `/usr/local/bin/jobvisor` does not exist
here. (systemd 252 does not check that `User=jobvisor` exists.) Its other findings
("Unknown key", "Failed to parse ..., ignoring") are printed without changing the exit
code, so the tests read the output line by line: every line must be the expected
missing-executable message, and nothing else. A second run on a copy whose ExecStart
points at an executable that exists must be silent and exit 0, and deliberately broken
copies must be caught by the same check.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT_DIR = REPO / "systemd"
BASE = UNIT_DIR / "jobvisor.service"
TEMPLATE = UNIT_DIR / "jobvisor@.service"
DASHBOARD = UNIT_DIR / "jobvisor-dashboard.service"
INSTANCE = "demo"
EXECUTABLE = "/usr/local/bin/jobvisor"
DEFAULT_GRACEFUL_TIMEOUT = 30.0  # DESIGN.md section 5

# The one complaint we expect: the executable is installed on servers, not here.
MISSING_EXECUTABLE = re.compile(
    r"^jobvisor(@[\w.-]+|-dashboard)?\.service: Command "
    + re.escape(EXECUTABLE)
    + r" is not executable: No such file or directory$"
)

Sections = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Sections:
    """Parse unit-file syntax: sections, repeatable keys, '#'/';' comments, '\\' continuations."""
    sections: Sections = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"directive outside a section: {line!r}"
        assert "=" in line, f"not a directive: {line!r}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def directives(path: Path) -> dict[str, dict[str, str]]:
    """Each key's single value; a key given twice is a mistake in these files."""
    out: dict[str, dict[str, str]] = {}
    for section, keys in parse_unit(path.read_text()).items():
        for key, values in keys.items():
            assert len(values) == 1, f"{path.name}: [{section}] {key}= appears {len(values)} times"
        out[section] = {key: values[0] for key, values in keys.items()}
    return out


def instance_copy(directory: Path, text: str | None = None) -> Path:
    """The template saved as an instance, which `systemd-analyze verify` can load."""
    target = directory / f"jobvisor@{INSTANCE}.service"
    target.write_text(TEMPLATE.read_text() if text is None else text)
    return target


def verify(*units: Path) -> tuple[int, list[str]]:
    """Run `systemd-analyze verify`; return its exit code and its non-empty output lines."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package 'systemd')")
    proc = subprocess.run(
        [tool, "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "LANG": "C", "SYSTEMD_LOG_COLOR": "0"},
    )
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return proc.returncode, lines


def unexpected(lines: list[str]) -> list[str]:
    return [ln for ln in lines if not MISSING_EXECUTABLE.match(ln)]


def with_existing_executable(text: str) -> str:
    """The same unit, ExecStart pointing at a program that exists on this machine."""
    assert EXECUTABLE in text
    return text.replace(EXECUTABLE, sys.executable)


# --- systemd-analyze verify ---------------------------------------------------------


@pytest.mark.parametrize("unit", [BASE, DASHBOARD], ids=lambda p: p.name)
def test_unit_verifies_except_for_missing_executable(unit: Path) -> None:
    code, lines = verify(unit)
    assert unexpected(lines) == []
    if Path(EXECUTABLE).exists():
        assert code == 0, lines
    else:
        assert code == 1 and len(lines) == 1, lines


def test_template_instance_verifies_except_for_missing_executable(tmp_path: Path) -> None:
    code, lines = verify(instance_copy(tmp_path))
    assert unexpected(lines) == []
    if Path(EXECUTABLE).exists():
        assert code == 0, lines
    else:
        assert code == 1, lines
        assert lines == [
            f"jobvisor@{INSTANCE}.service: Command {EXECUTABLE} is not executable: "
            "No such file or directory"
        ]


def test_dashboard_unit_runs_the_dashboard_hardened(tmp_path: Path) -> None:
    service = directives(DASHBOARD)["Service"]
    assert service["ExecStart"] == f"{EXECUTABLE} dashboard --config /etc/jobvisor/config.toml"
    hardening = {k: v for k, v in COMMON_SERVICE.items()
                 if k not in ("Type", "NotifyAccess", "WatchdogSec", "ExecReload", "KillMode",
                              "TimeoutStopSec")}
    assert {k: service.get(k) for k in hardening} == hardening
    assert "ReadWritePaths" not in service  # it writes nothing
    copy = tmp_path / "jobvisor-dashboard.service"
    copy.write_text(with_existing_executable(DASHBOARD.read_text()))
    code, lines = verify(copy)
    assert (code, lines) == (0, [])


def test_units_are_clean_when_the_executable_exists(tmp_path: Path) -> None:
    base = tmp_path / "jobvisor.service"
    base.write_text(with_existing_executable(BASE.read_text()))
    instance = instance_copy(tmp_path, with_existing_executable(TEMPLATE.read_text()))
    assert verify(base, instance) == (0, [])


BREAKAGES = {
    "bad value": ("KillMode=mixed", "KillMode=mixd"),
    "unknown key": ("Type=notify", "Typo=notify"),
    "bad time": ("TimeoutStopSec=45", "TimeoutStopSec=forty-five"),
    "unknown section": ("[Service]", "[Servic]"),
    "missing '='": ("PrivateTmp=yes", "PrivateTmp yes"),
    "bad address family": ("AF_INET6", "AF_INET7"),
    "bad specifier": ("/etc/jobvisor/%i.toml", "/etc/jobvisor/%Z.toml"),
}


@pytest.mark.parametrize("old,new", BREAKAGES.values(), ids=BREAKAGES.keys())
def test_a_broken_copy_is_caught(tmp_path: Path, old: str, new: str) -> None:
    text = TEMPLATE.read_text()
    assert old in text
    code, lines = verify(instance_copy(tmp_path, text.replace(old, new, 1)))
    assert code != 0
    assert unexpected(lines), f"verify did not notice {new!r}: {lines}"


# --- required directives ------------------------------------------------------------

COMMON_SERVICE = {
    "Type": "notify",
    "NotifyAccess": "main",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "KillMode": "mixed",
    "KillSignal": "SIGTERM",
    "TimeoutStopSec": "45",
    "WatchdogSec": "30",
    "Restart": "on-failure",
    "RestartSec": "2",
    "User": "jobvisor",
    "Group": "jobvisor",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectHome": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "CapabilityBoundingSet": "",
    "UMask": "0077",
}

PER_UNIT = {
    BASE: {
        "ExecStart": f"{EXECUTABLE} run --config /etc/jobvisor/config.toml",
        "StateDirectory": "jobvisor",
        "WorkingDirectory": "/var/lib/jobvisor",
        "Environment": "JOBVISOR_SUPERVISOR_DATA_DIR=/var/lib/jobvisor",
        "ReadWritePaths": "/var/lib/jobvisor",
    },
    TEMPLATE: {
        "ExecStart": f"{EXECUTABLE} run --config /etc/jobvisor/%i.toml",
        "StateDirectory": "jobvisor/%i",
        "WorkingDirectory": "/var/lib/jobvisor/%i",
        "Environment": "JOBVISOR_SUPERVISOR_DATA_DIR=/var/lib/jobvisor/%i",
        "ReadWritePaths": "/var/lib/jobvisor/%i",
    },
}


@pytest.mark.parametrize("unit", PER_UNIT, ids=lambda p: p.name)
def test_required_directives(unit: Path) -> None:
    units = directives(unit)
    service = units["Service"]
    expected = {**COMMON_SERVICE, **PER_UNIT[unit]}
    assert {key: service.get(key) for key in expected} == expected
    assert units["Install"] == {"WantedBy": "multi-user.target"}
    assert units["Unit"]["Description"]


def test_template_differs_from_base_only_by_instance() -> None:
    """The two files must not drift apart: same options once '%i' is taken out."""
    base = directives(BASE)["Service"]
    template = {
        key: value.replace("/%i.toml", "/config.toml").replace("/%i", "")
        for key, value in directives(TEMPLATE)["Service"].items()
    }
    assert template == base


@pytest.mark.parametrize("unit", PER_UNIT, ids=lambda p: p.name)
def test_stop_timeout_exceeds_graceful_timeout(unit: Path) -> None:
    """systemd must not SIGKILL children that are still inside graceful_timeout."""
    graceful = DEFAULT_GRACEFUL_TIMEOUT
    shipped = REPO / "config.toml"
    if shipped.exists():
        config = tomllib.loads(shipped.read_text())
        graceful = float(config.get("supervisor", {}).get("graceful_timeout", graceful))
    stop = float(directives(unit)["Service"]["TimeoutStopSec"])
    assert stop > graceful + 5, f"TimeoutStopSec={stop} leaves no margin over {graceful}"
    text = unit.read_text()
    assert "graceful_timeout" in text, "the unit must say why TimeoutStopSec is what it is"


def test_parse_unit_handles_continuations_and_repeats() -> None:
    parsed = parse_unit("[A]\n# c\nX=1 \\\n  2\nX=3\n; c\n[B]\nY=\n")
    assert parsed == {"A": {"X": ["1 2", "3"]}, "B": {"Y": [""]}}
