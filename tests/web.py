"""A real ``jobvisor dashboard`` process and a headless Chromium to look at it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from supervisor.web.accounts import hash_secret
from tests.helpers import stop_process, wait_until

USERS = {"ada": ("admin", "ada-secret-1"), "vic": ("viewer", "vic-secret-1")}
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def users_file(directory: Path) -> Path:
    path = directory / "users"
    path.write_text("".join(f"{name}:{role}:{hash_secret(secret)}\n"
                            for name, (role, secret) in USERS.items()))
    return path


class Dashboard:
    """``jobvisor dashboard`` on a free loopback port, for one namespace."""

    def __init__(self, tmp: Path, url: str, ns: str, *, users: Path | None = None,
                 extra: str = "", settings: str = "", env: dict[str, str] | None = None,
                 ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "dashboard.log"
        config = tmp / "dashboard.toml"
        config.write_text(
            f'[redis]\nurl = "{url}"\nnamespace = "{ns}"\nsocket_timeout = 2.0\n'
            f'connect_timeout = 1.0\n\n[dashboard]\nbind = "127.0.0.1:{self.port}"\n'
            f'refresh = 0.5\n' + (f'users_file = "{users}"\n' if users else "") + settings
            + extra)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "supervisor", "--config", str(config), "dashboard"],
                cwd=Path(__file__).parent.parent, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})})
        wait_until(self._answers, timeout=20, what="the dashboard to answer")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"dashboard exited: {self.log.read_text()}")
        try:
            return httpx.get(f"{self.base}/login", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        stop_process(self.proc, grace=10)


def signed_in(base: str, name: str) -> httpx.Client:
    """An HTTP client holding a session (and the CSRF cookie) of user ``name``."""
    client = httpx.Client(base_url=base, timeout=10, follow_redirects=False)
    client.get("/login")
    token = client.cookies["csrftoken"]
    reply = client.post("/login", data={"name": name, "password": USERS[name][1],
                                        "next": "/", "_csrf_token": token})
    assert reply.status_code == 303, (reply.status_code, reply.text[:2000])
    return client


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    return found


def browser_session() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()
