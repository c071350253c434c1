"""A real supervisor subprocess on a temp config, for process tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil

from jobs import Broker, RedisSettings
from tests.helpers import stop_process, wait_until

CONFIG = """\
[redis]
url = "{url}"
namespace = "{ns}"

[supervisor]
data_dir = "{data}"
workers = {workers}
graceful_timeout = {graceful}
lease_timeout = {lease}
{sup_extra}

[worker]
modules = {modules}
queues = ["default"]
{tail}
"""


class Running:
    def __init__(self, tmp: Path, server, ns: str, workers: int = 2, graceful: float = 10.0,
                 modules: str = '["examples.cpu", "tests.jobfuncs"]', extra: str = "",
                 env: dict[str, str] | None = None, tail: str = "",
                 args: tuple[str, ...] = (), lease: float = 3.0, cwd: Path | None = None,
                 command: list[str] | None = None) -> None:
        self.config = tmp / "config.toml"
        self.log = tmp / "supervisor.log"
        self.text = CONFIG.format(url=server.url, ns=ns, data=tmp / "var", workers=workers,
                                  graceful=graceful, modules=modules, sup_extra=extra,
                                  tail=tail, lease=lease)
        self.config.write_text(self.text)
        self.proc = subprocess.Popen(
            [*(command or [sys.executable, "-m", "supervisor"]), "--config", str(self.config),
             "run", "--log-file", str(self.log), *args], cwd=cwd or Path(__file__).parent.parent,
            env={**os.environ, **(env or {})})
        self.broker = Broker(server.url, redis_settings=RedisSettings(namespace=ns))

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return []

    def workers(self) -> list[psutil.Process]:
        """Children that are workers by their title: a helper process a library runs
        while the supervisor boots (croniter probes the platform) is not one."""
        found = []
        for c in self.children():
            try:
                if " ".join(c.cmdline()).startswith("jobvisor: worker"):
                    found.append(c)
            except psutil.Error:  # exited meanwhile
                pass
        return found

    def wait_workers(self, n: int) -> list[psutil.Process]:
        return wait_until(lambda: len(w := self.workers()) == n and w, timeout=20,
                          what=f"{n} workers")

    def stop(self) -> int:
        code = stop_process(self.proc, grace=30)
        assert code is not None
        return code

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def jobvisor_command() -> list[str]:
    """The installed ``jobvisor`` console script, as a user runs it (its sys.path[0] is
    its bin directory, not the working directory, unlike ``python -m supervisor``)."""
    script = Path(sys.executable).parent / "jobvisor"
    found = str(script) if script.exists() else shutil.which("jobvisor")
    assert found, "the jobvisor console script is not installed (pip install -e .)"
    return [found]


def supervisors(tmp_path, server, namespace):
    runs: list[Running] = []

    def start(**kw) -> Running:
        (tmp_path / f"s{len(runs)}").mkdir(exist_ok=True)
        r = Running(tmp_path / f"s{len(runs)}", server, namespace, **kw)
        runs.append(r)
        return r

    yield start
    for r in runs:
        r.stop()


def start_and_wait(sup, **kw):
    r = sup(**kw)
    r.wait_workers(kw.get("workers", 2))
    return r


