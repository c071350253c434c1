"""``jobvisor dashboard``: serve the app with uvicorn, on loopback unless sign-in is on."""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from jobs.errors import ConfigurationError
from supervisor.config import Config
from supervisor.web.app import create_app

log = logging.getLogger("jobvisor.dashboard")


def split_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        number = 0
    if not 0 < number < 65536:
        raise ConfigurationError(f"--bind {bind!r} needs HOST:PORT with a port from 1 to 65535")
    return host, number


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(config: Config, bind: str | None = None) -> None:
    """Run the dashboard until interrupted; refuses a non-loopback address without users."""
    host, port = split_bind(bind or config.dashboard.bind)
    if not is_loopback(host) and not config.dashboard.users_file:
        raise ConfigurationError(
            f"the dashboard would listen on {host} with no sign-in: anyone who can reach it "
            "could act on every job. Set [dashboard] users_file (see `jobvisor dashboard "
            "passwd`) or bind to 127.0.0.1")
    app = create_app(config)
    log.info("dashboard on http://%s:%d/ (%s)", host if ":" not in host else f"[{host}]", port,
             "sign-in required" if config.dashboard.users_file else "open: loopback only")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                proxy_headers=False, server_header=False)
