"""The supervisor as a real systemd service, driven with systemctl as an operator would.

A real systemd (``/lib/systemd/systemd``) is booted as PID 1 of a private PID + mount
(+ UTS, IPC) namespace, as /work/shared/notes/systemd-testing.md describes, with a runtime
unit derived from ``systemd/jobvisor.service``. From outside, ``nsenter -t <systemd> -a
systemctl ...`` starts the service (``Type=notify``: start returns only after READY=1),
reads ``StatusText``/``MainPID``, runs a job through the embedded server's unix socket,
edits the config and reloads (SIGHUP: RELOADING=1 ... READY=1, same MainPID, rolled
workers), checks the watchdog pings, stops it (graceful, exit 0) and powers the namespace
off.

The namespace shares the machine's filesystem and kernel, so the boot script keeps the
boot from touching anything outside it:

- the masks from the notes (``systemd-tmpfiles-*`` would empty the shared ``/tmp``) and a
  few more, listed in ``MASKED`` with the reason for each;
- private tmpfs on ``/run`` (where the masks and the unit live), ``/var/tmp`` (units'
  PrivateTmp= directories) and ``/var/log/journal`` (Debian keeps a persistent journal
  there: journalctl would also show an earlier run's entries); a private ``/dev``
  holding only the usual device nodes, a new devpts instance and a file as
  ``/dev/console``, so systemd neither writes to the machine's console nor creates
  ``/dev/log`` or directories on the machine's devtmpfs;
- ``/proc/sys`` read-only, as container managers do: kernel tunables are global to the
  machine, and PID 1 and boot services may write some of them;
- systemd starts in a new cgroup of its own (a child of this process's cgroup), so its
  slices and units cannot collide with another run of this test, and the cgroups are
  removed afterwards.

Only processes this test started are ever signalled, by pid.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, TypeVar

import psutil
import pytest

from jobs import Broker, Queue
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parent.parent
SHIPPED_UNIT = REPO / "systemd" / "jobvisor.service"
SYSTEMD = Path("/lib/systemd/systemd")
UNIT = "jobvisor-e2e.service"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# The shipped WatchdogSec=30 means a ping every 15 s; a shorter period lets the test see
# several pings (and a watchdog kill, were the pings missing) within a few seconds.
WATCHDOG_SEC = 4
NOBODY, NOGROUP = 65534, 65534  # Debian's unprivileged account and group
HOMES = (Path("/root"), Path("/home"), Path("/run/user"))  # what ProtectHome= hides
APP_PACKAGES = ("jobs", "supervisor", "examples")  # what the service imports

MASKED = (
    # From the notes: these would empty the machine's shared /tmp.
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-clean.timer",
    "systemd-tmpfiles-clean.service",
    "tmp.mount",
    # From the notes: services the image enables that this test does not want.
    "redis-server.service",
    "postgresql.service",
    "postgresql@15-main.service",
    "getty@tty1.service",
    "console-getty.service",
    # Added here. The image's timers (apt-daily, man-db, fstrim, dpkg-db-backup,
    # e2scrub_all) would run apt, fstrim... on the shared filesystem if one came due.
    "timers.target",
    # Would act on the whole machine: its clock, kernel tunables, binfmt handlers,
    # kernel modules, LVM snapshots, pstore.
    "systemd-timesyncd.service",
    "systemd-sysctl.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "systemd-modules-load.service",
    "e2scrub_reap.service",
    "systemd-pstore.service",
    # Would write to the shared /etc and /var: users, machine-id, utmp/wtmp, seed, journal.
    "systemd-sysusers.service",
    "systemd-firstboot.service",
    "systemd-machine-id-commit.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-random-seed.service",
    "systemd-journal-flush.service",
    "systemd-logind.service",  # creates /var/lib/systemd/linger; no logins here anyway
)

BOOT_SCRIPT = r"""
set -eu
console="$1"; shift
# Leave the cgroup the test runs in for a new one of our own (one per hierarchy that
# systemd uses), so that systemd's slices and units live under it.
for cg in "$@"; do echo $$ > "$cg/cgroup.procs"; done
# mount -n: no record in the machine's /run/mount/utab (written before /run is covered).
mount -n -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -n -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
if [ -d /var/log/journal ]; then
    mount -n -t tmpfs -o mode=2755,nosuid,nodev tmpfs /var/log/journal
fi
mount -n --bind /proc/sys /proc/sys
mount -n -o remount,bind,ro /proc/sys
mkdir -p /run/systemd/system /run/e2e-olddev
mount -n --bind /dev /run/e2e-olddev
mount -n -t tmpfs -o mode=0755,nosuid tmpfs /dev
for node in null zero full random urandom tty; do
    touch "/dev/$node"
    mount -n --bind "/run/e2e-olddev/$node" "/dev/$node"
done
umount -n /run/e2e-olddev
rmdir /run/e2e-olddev
touch /dev/console
mount -n --bind "$console" /dev/console
mkdir /dev/pts /dev/shm
mount -n -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
mount -n -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
for unit in {masked}; do ln -s /dev/null "/run/systemd/system/$unit"; done
cp {unit_file} /run/systemd/system/{unit}
exec {systemd} --system --unit=multi-user.target
"""

CONFIG = """\
[redis]
url = ""

[supervisor]
data_dir = {data_dir}
workers = {workers}
graceful_timeout = 5

[worker]
modules = ["examples.cpu"]
"""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root to boot systemd in a private PID + mount namespace"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} is not installed"
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"`{tool}` (util-linux) is not installed"
    return None


needs_systemd = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


# -- the unit ---------------------------------------------------------------------------


def _quoted(value: str) -> str:
    """One word for a unit file: specifiers and variables escaped, then double-quoted."""
    value = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + value.replace("%", "%%").replace("$", "$$") + '"'


def install_app(target: Path) -> Path:
    """Copy the packages the service imports to ``target``, readable by every user.

    A deployment installs the code where the service's account can read it; the checkout
    may live anywhere (under a home, under a mode-0700 directory), so the unit never
    points at it.
    """
    target.mkdir()
    for name in APP_PACKAGES:
        shutil.copytree(REPO / name, target / name, symlinks=False,
                        ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))
    for directory, _, files in os.walk(target):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)
    return target


class Mounts(NamedTuple):
    """Mounts that let the service's user reach the interpreter; see interpreter_mounts."""

    tmpfs: list[Path]  # TemporaryFileSystem=, read-only: empty directories, mode 0755
    bind: list[Path]  # BindReadOnlyPaths=, each at its own place


def _nobody_may(path: Path, bits: int) -> bool:
    """Whether ``nobody`` has the permission ``bits`` (of R_OK, W_OK, X_OK) on ``path``."""
    st = path.stat()
    if st.st_uid == NOBODY:
        shift = 6
    elif st.st_gid == NOGROUP:
        shift = 3
    else:
        shift = 0
    return (st.st_mode >> shift) & bits == bits


def _interpreter_paths() -> list[Path]:
    """What the service's interpreter reads: its prefixes, its binary, its site-packages."""
    paths = {sys.prefix, sys.base_prefix, os.path.dirname(sys.executable),
             os.path.dirname(os.path.realpath(sys.executable)), *site.getsitepackages()}
    return sorted({Path(p).resolve() for p in paths if os.path.isdir(p)})


def interpreter_mounts(needed: list[Path]) -> Mounts:
    """Make every path in ``needed`` reachable by ``nobody`` without changing the machine.

    ProtectHome=tmpfs hides the homes (/root, /home, /run/user) behind empty read-only
    directories: a path under one is bound back in at its own place (pyenv's /root/.pyenv
    here). Elsewhere, a parent that others may not enter (mode 0700) gets the same
    treatment: an empty tmpfs over it (its other contents hidden), the path bound back
    in. Both keep each path where it is, which a virtualenv needs: its scripts, its
    pyvenv.cfg and its .pth files name absolute paths, so it cannot be bound elsewhere.
    What sits at or below such a path keeps its own modes; where those shut ``nobody``
    out, nothing short of changing them helps, so the test is skipped naming the path.
    """
    roots = [p for p in needed if not any(p != q and p.is_relative_to(q) for q in needed)]
    tmpfs: set[Path] = set()
    bind: set[Path] = set()
    for root in roots:
        if any(root.is_relative_to(home) for home in HOMES):
            bind.add(root)
            continue
        for parent in reversed(root.parents):
            if not _nobody_may(parent, os.X_OK):
                if parent in (Path("/"), Path("/tmp")):
                    pytest.skip(f"{parent} may not be entered by other users")
                tmpfs.add(parent)
                bind.add(root)
                break
    for path in needed:
        root = next(r for r in roots if path.is_relative_to(r))
        inside = [root, *(p for p in path.parents if p.is_relative_to(root) and p != root)]
        for step in inside:
            if not _nobody_may(step, os.X_OK):
                pytest.skip(f"{step} may not be entered by other users, and the service "
                            f"(as nobody) needs {path}: give others x on it (chmod o+x)")
        if not _nobody_may(path, os.R_OK | os.X_OK):
            pytest.skip(f"{path} may not be read by other users, and the service (as "
                        f"nobody) needs it: give others r and x on it (chmod o+rx)")
    executable = Path(sys.executable).resolve()
    if not _nobody_may(executable, os.X_OK):
        pytest.skip(f"{executable} may not be run by other users (chmod o+rx)")
    for path in tmpfs | bind:
        if ":" in str(path):
            pytest.skip(f"{path}: a path with ':' cannot be named in TemporaryFileSystem= "
                        "or BindReadOnlyPaths=")
    return Mounts(sorted(tmpfs), sorted(bind))


def derive_unit(shipped: str, config: Path, data_dir: Path, writable: Path, app: Path,
                mounts: Mounts) -> str:
    """The shipped unit, changed only where a test run inside this container needs it.

    Kept as shipped: Type=notify, NotifyAccess=main, ExecReload, KillMode=mixed,
    KillSignal, TimeoutStopSec, Restart, and every sandboxing option not listed below.
    Changed or dropped, and why:

    - ExecStart: this interpreter running ``-m supervisor`` from this checkout, with the
      test's config.
    - WatchdogSec: shortened, see ``WATCHDOG_SEC``.
    - User=/Group=: ``nobody``/``nogroup`` (the machine has no ``jobvisor`` account): the
      service runs unprivileged, as shipped, under an account that exists everywhere.
    - StateDirectory=: dropped; it would create /var/lib/jobvisor on the machine's real
      filesystem. The data directory is the test's own, named by the config and by
      JOBVISOR_SUPERVISOR_DATA_DIR, and is the only ReadWritePaths= entry.
    - WorkingDirectory=: ``app``, where ``install_app`` copied the packages the service
      imports, and PYTHONPATH too, so ``examples.cpu`` imports. Never the checkout: it may
      sit under a directory ``nobody`` cannot enter (a home, a mode-0700 parent).
    - PrivateTmp=yes: dropped; the config and the data directory (with the embedded
      server's socket, which the test uses from outside) are in a directory under
      /tmp, which a private /tmp would hide: the unit fails with 226/NAMESPACE.
    - ProtectHome=yes: becomes ``tmpfs`` (an empty home, /root included), and
      BindReadOnlyPaths= and TemporaryFileSystem= are added: see ``interpreter_mounts``.

    Everything else (ProtectSystem=strict, PrivateDevices, ProtectKernel*, ProtectClock,
    ProtectHostname, RestrictNamespaces, MemoryDenyWriteExecute, SystemCallArchitectures,
    RestrictAddressFamilies, NoNewPrivileges, UMask...) works inside this namespace.
    """
    python = sys.executable
    replace: dict[str, str | None] = {
        "ExecStart": f"{_quoted(python)} -m supervisor --config {_quoted(str(config))} run",
        "WatchdogSec": str(WATCHDOG_SEC),
        "User": "nobody",
        "Group": "nogroup",
        "StateDirectory": None,
        "WorkingDirectory": str(app).replace("%", "%%"),
        "ReadWritePaths": _quoted(str(writable)),
        "PrivateTmp": None,
        "ProtectHome": "tmpfs",
    }
    seen: set[str] = set()
    out = [f"# {UNIT}: generated by {Path(__file__).name} from {SHIPPED_UNIT.name}"]
    for line in shipped.splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or line.lstrip().startswith(("#", ";")):
            out.append(line)
            continue
        if key == "Environment" and value.startswith("JOBVISOR_SUPERVISOR_DATA_DIR="):
            out.append(f"Environment={_quoted('JOBVISOR_SUPERVISOR_DATA_DIR=' + str(data_dir))}")
            out.append(f"Environment={_quoted('PYTHONPATH=' + str(app))}")
            seen.add(key)
            continue
        if key in replace:
            seen.add(key)
            new = replace[key]
            if new is not None:
                out.append(f"{key}={new}")
            if key == "ProtectHome" and mounts.tmpfs:
                out.append("TemporaryFileSystem=" + " ".join(
                    _quoted(str(path)) + ":ro" for path in mounts.tmpfs))
            if key == "ProtectHome" and mounts.bind:
                out.append("BindReadOnlyPaths=" + " ".join(
                    _quoted(str(path)) for path in mounts.bind))
            continue
        out.append(line)
    expected = set(replace) | {"Environment"}
    assert seen == expected, f"{SHIPPED_UNIT} changed: {sorted(expected - seen)} not found"
    return "\n".join(out) + "\n"


# -- the namespace ----------------------------------------------------------------------


def _own_cgroups(name: str) -> list[Path]:
    """New cgroup directories, children of ours, for the hierarchies systemd manages."""
    current: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        current[controllers] = path
    dirs = []
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # unified hierarchy only
        dirs.append(CGROUP_ROOT / current[""].lstrip("/") / name)
    else:  # legacy or hybrid: systemd's named hierarchy, plus cgroup2 when mounted
        dirs.append(CGROUP_ROOT / "systemd" / current["name=systemd"].lstrip("/") / name)
        if (CGROUP_ROOT / "unified" / "cgroup.controllers").exists():
            dirs.append(CGROUP_ROOT / "unified" / current[""].lstrip("/") / name)
    for d in dirs:
        d.mkdir()
    return dirs


def _remove_cgroups(dirs: list[Path]) -> None:
    for top in dirs:
        if not top.exists():
            continue
        for path, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
            with contextlib.suppress(OSError):
                os.rmdir(path)  # fails (and is left) while a process is still inside


T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], timeout: float, interval: float = 0.2) -> T:
    return wait_until(check, timeout, interval, what)


class Machine:
    """A systemd booted in a private namespace, reached with nsenter."""

    def __init__(self, unshare: subprocess.Popen[bytes], console: Path) -> None:
        self.unshare = unshare
        self.console = console
        self.pid = 0  # systemd, as seen from here

    def find_systemd(self, timeout: float) -> None:
        def systemd_child() -> int:
            if self.unshare.poll() is not None:
                raise AssertionError(f"unshare exited with {self.unshare.returncode}")
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(self.unshare.pid).children():
                    if child.exe() == str(SYSTEMD.resolve()):
                        return child.pid
            return 0

        self.pid = wait_for("systemd to start", systemd_child, timeout)

    def run(self, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, SYSTEMD_PAGER="", SYSTEMD_COLORS="0", LC_ALL="C.UTF-8")
        return subprocess.run(["nsenter", "-t", str(self.pid), "-a", *argv], env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def systemctl(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, timeout=timeout)

    def show(self, *props: str) -> dict[str, str]:
        out = self.systemctl("show", "-p", ",".join(props), UNIT).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self) -> str:
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", UNIT).stdout

    def wait_journal(self, text: str, timeout: float = 15.0) -> str:
        def journal_with_text() -> str:
            journal = self.journal()
            return journal if text in journal else ""

        return wait_for(f"{text!r} in the journal of {UNIT}", journal_with_text, timeout)

    def diagnostics(self) -> str:
        if not self.pid or self.unshare.poll() is not None:
            return f"namespace gone; console:\n{self.console.read_text(errors='replace')}"
        parts = [self.systemctl("status", "-l", UNIT).stdout,
                 self.systemctl("--failed").stdout,
                 self.run("journalctl", "--no-pager", "-b", "-n", "200").stdout]
        return "\n".join(parts)

    def poweroff(self, timeout: float) -> None:
        if self.unshare.poll() is None and self.pid:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                self.systemctl("poweroff", timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.unshare.wait(timeout)

    def kill(self) -> None:
        """Last resort: SIGKILL to the namespace's PID 1 ends every process in it."""
        if self.unshare.poll() is not None:
            return
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.unshare.wait(10)
            return
        self.unshare.kill()
        self.unshare.wait(10)


@contextlib.contextmanager
def booted(directory: Path, unit_text: str) -> Iterator[Machine]:
    """Boot systemd with the unit installed; always power it off (or kill it) after."""
    unit_file = directory / UNIT
    unit_file.write_text(unit_text)
    console = directory / "console.log"
    console.touch()
    script = directory / "boot.sh"
    script.write_text(BOOT_SCRIPT.format(
        masked=" ".join(map(shlex.quote, MASKED)), unit_file=shlex.quote(str(unit_file)),
        unit=UNIT, systemd=shlex.quote(str(SYSTEMD))))
    cgroups = _own_cgroups(f"jobvisor-e2e-{uuid.uuid4().hex[:12]}")
    try:
        with (directory / "unshare.log").open("wb") as log:
            unshare = subprocess.Popen(
                ["unshare", "--fork", "--pid", "--mount", "--mount-proc", "--uts", "--ipc",
                 "/bin/sh", str(script), str(console), *map(str, cgroups)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        machine = Machine(unshare, console)
        try:
            machine.find_systemd(timeout=20)
            yield machine
        except BaseException:
            with contextlib.suppress(Exception):
                print(machine.diagnostics())
            print((directory / "unshare.log").read_text(errors="replace"))
            raise
        finally:
            machine.poweroff(timeout=30)
            machine.kill()
    finally:
        _remove_cgroups(cgroups)


# -- the test ---------------------------------------------------------------------------


def test_the_unit_runs_an_installed_copy_never_the_checkout(tmp_path: Path) -> None:
    """The service's user may not be able to enter the checkout; the unit must not need to."""
    app = install_app(tmp_path / "app")
    unit = derive_unit(SHIPPED_UNIT.read_text(), tmp_path / "config.toml", tmp_path / "var",
                       tmp_path, app, Mounts([], []))
    working = re.findall(r"^WorkingDirectory=(.*)$", unit, re.MULTILINE)
    pythonpath = re.findall(r'^Environment="PYTHONPATH=(.*)"$', unit, re.MULTILINE)
    assert working == [str(app)] and pythonpath == [str(app)], unit
    assert not app.is_relative_to(REPO)
    for name in APP_PACKAGES:
        assert (app / name / "__init__.py").is_file()
    assert (app / "jobs" / "store" / "lua").is_dir()  # package data travels with the code
    assert not list(app.rglob("__pycache__"))
    for path in [app, *app.rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path


def test_interpreter_mounts_open_a_private_parent() -> None:
    """A virtualenv under a mode-0700 directory: a tmpfs over that, the venv bound back."""
    base = Path(tempfile.mkdtemp(prefix="jobvisor-e2e-mounts-", dir="/tmp"))  # mode 0700
    try:
        venv = base / "venv"
        (venv / "lib").mkdir(parents=True, mode=0o755)
        os.chmod(venv, 0o755)
        os.chmod(venv / "lib", 0o755)
        assert interpreter_mounts([venv, venv / "lib"]) == Mounts([base], [venv])

        os.chmod(venv / "lib", 0o700)  # below the bound path: modes that stay as they are
        with pytest.raises(pytest.skip.Exception, match=re.escape(str(venv / "lib"))):
            interpreter_mounts([venv, venv / "lib"])
    finally:
        shutil.rmtree(base)


@needs_systemd
@pytest.mark.timeout(180)
def test_supervisor_as_a_systemd_service(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    started_at = time.monotonic()
    root = tmp_path / "e2e"
    root.mkdir()
    # What the service reads and writes, where ``nobody`` can reach it (pytest's own
    # tmp_path is private to root): owned by nobody, removed afterwards.
    service_dir = Path(tempfile.mkdtemp(prefix="jobvisor-e2e-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(service_dir, ignore_errors=True))
    data_dir = service_dir / "var"
    data_dir.mkdir()
    config = service_dir / "config.toml"
    config_text = CONFIG.format(data_dir=_toml(data_dir), workers=2)
    config.write_text(config_text)
    for path in (service_dir, data_dir, config):
        os.chown(path, NOBODY, NOGROUP)
    app = install_app(service_dir / "app")
    mounts = interpreter_mounts(_interpreter_paths())
    unit_text = derive_unit(SHIPPED_UNIT.read_text(), config, data_dir, service_dir, app, mounts)
    for kept in ("Type=notify", "NotifyAccess=main", "ExecReload=/bin/kill -HUP $MAINPID",
                 "KillMode=mixed", "TimeoutStopSec=", f"WatchdogSec={WATCHDOG_SEC}"):
        assert kept in unit_text

    with booted(root, unit_text) as m:
        def booted_state() -> str:
            state = m.systemctl("is-system-running").stdout.strip()
            return state if state in ("running", "degraded") else ""

        state = wait_for("systemctl is-system-running: running or degraded", booted_state, 60)
        if state == "degraded":
            print("system degraded:\n" + m.systemctl("--failed").stdout)
        assert Path("/tmp").is_dir() and tmp_path.is_dir(), "the boot emptied /tmp"

        # Type=notify: `start` returns only once READY=1 arrived, so no polling here.
        start = m.systemctl("start", UNIT, timeout=60)
        assert start.returncode == 0, start.stderr
        props = m.show("ActiveState", "SubState", "MainPID", "StatusText", "NRestarts")
        assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
        assert re.fullmatch(r"\d+/2 busy \[default\]", props["StatusText"]), props
        main_pid = props["MainPID"]
        assert int(main_pid) > 0
        assert (data_dir / "jobvisor.pid").read_text().strip() == main_pid
        # Unprivileged: the supervisor, its workers and the embedded server all run as
        # nobody (the pid file and the server's socket are theirs too).
        # -ww: the lines are never cut to $COLUMNS (pytest-xdist's workers set it), which
        # would cut the server's long binary path before its name.
        users = m.run("ps", "-ww", "-eo", "user:16=,args=").stdout.splitlines()
        service = [u.split(None, 1) for u in users if "jobvisor:" in u or "valkey-server" in u]
        assert len(service) >= 4 and all(u == "nobody" for u, _ in service), users
        assert (data_dir / "jobvisor.pid").stat().st_uid == NOBODY
        assert (data_dir / "valkey.sock").stat().st_uid == NOBODY
        m.wait_journal("Started jobvisor-e2e.service")
        m.wait_journal("supervisor ready")  # logged just after READY=1 is sent

        # A job through the embedded server's socket, which is on the shared filesystem.
        broker = Broker(f"unix://{data_dir / 'valkey.sock'}")
        try:
            queue = Queue("default", broker)
            assert queue.enqueue("examples.cpu:count_primes", 10_000).result(timeout=20) == 1229

            # The watchdog: pings from the main loop move WatchdogTimestamp along.
            first = m.show("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
            wait_for("a watchdog ping", lambda: m.show("WatchdogTimestampMonotonic")
                     ["WatchdogTimestampMonotonic"] not in ("0", first), timeout=WATCHDOG_SEC * 3)

            # Reload: the operator edits the config, then `systemctl reload`.
            config.write_text(config_text.replace("workers = 2", "workers = 3"))
            reload = m.systemctl("reload", UNIT, timeout=30)
            assert reload.returncode == 0, reload.stderr
            m.wait_journal("reloaded configuration (version 2): rolling restart of 3 workers")
            m.wait_journal("Reloaded jobvisor-e2e.service")
            wait_for("the rolled pool of 3 in StatusText",
                     lambda: re.fullmatch(r"\d+/3 busy \[default\]",
                                          m.show("StatusText")["StatusText"]), timeout=20)
            props = m.show("ActiveState", "SubState", "MainPID", "NRestarts")
            assert props == {"ActiveState": "active", "SubState": "running",
                             "MainPID": main_pid, "NRestarts": "0"}, props
            wait_for("both old workers retired",
                     lambda: m.journal().count("retiring: replaced after reload") == 2, 10)
            assert queue.enqueue("examples.cpu:count_primes", 10_000).result(timeout=20) == 1229
        finally:
            broker.client.close()

        # Stop: SIGTERM to the supervisor, a graceful stop, exit 0, nothing left to kill.
        stop = m.systemctl("stop", UNIT, timeout=60)
        assert stop.returncode == 0, stop.stderr
        props = m.show("ActiveState", "SubState", "Result", "ExecMainStatus", "MainPID")
        assert props == {"ActiveState": "inactive", "SubState": "dead", "Result": "success",
                         "ExecMainStatus": "0", "MainPID": "0"}, props
        m.wait_journal(f"supervisor {main_pid} stopped")
        journal = m.wait_journal("Stopped jobvisor-e2e.service")
        assert "left-over process" not in journal and "Killing process" not in journal
        assert not (data_dir / "jobvisor.pid").exists()

        poweroff = m.systemctl("poweroff", timeout=15)
        assert poweroff.returncode == 0, poweroff.stderr
        m.unshare.wait(30)  # PID 1's reboot() in a PID namespace ends it with a signal
    print(f"systemd end-to-end test took {time.monotonic() - started_at:.1f} s")


def _toml(path: Path) -> str:
    """A TOML basic string."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'
