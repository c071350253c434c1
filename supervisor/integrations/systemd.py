"""A dependency-free client for systemd's notify protocol (``sd_notify``).

Under ``Type=notify`` systemd waits for ``READY=1`` before it calls the unit
started, shows ``STATUS=`` in ``systemctl status``, and, with ``WatchdogSec=``,
restarts the service when ``WATCHDOG=1`` pings stop. The protocol is one
datagram of ``KEY=value`` lines sent to the AF_UNIX socket named by
``$NOTIFY_SOCKET``; that is small enough to speak directly instead of pulling
in libsystemd bindings.

Outside systemd (``NOTIFY_SOCKET`` unset) every method is a no-op, so the
supervisor calls them unconditionally. Notifications are advisory: a failed
send is logged once at debug level and otherwise ignored, because losing a
status line must never take the supervisor down.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Mapping, MutableMapping

__all__ = ["ENVIRONMENT_VARIABLES", "Notifier", "unset_environment"]

log = logging.getLogger(__name__)

#: What systemd puts in a notify service's environment; see ``unset_environment``.
ENVIRONMENT_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]*\Z")


def _socket_address(value: str | None) -> str | None:
    """Turn ``$NOTIFY_SOCKET`` into an address for ``sendto``, or None if unusable.

    A leading ``@`` names a Linux abstract socket, whose real name starts with
    a NUL byte. Other forms (``vsock:`` in newer systemd) are not spoken here.
    """
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.debug("NOTIFY_SOCKET=%r is not a path or an abstract socket; not notifying", value)
    return None


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between watchdog pings: half the period, as sd_watchdog_enabled(3) advises.

    ``WATCHDOG_PID`` names the process the watchdog is meant for; when it is some
    other pid (say, a child that inherited the environment) this process must not
    ping, so the answer is None.
    """
    raw_usec = environ.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    raw_pid = environ.get("WATCHDOG_PID", "")
    if raw_pid:
        try:
            pid = int(raw_pid)
        except ValueError:
            return None
        if pid != os.getpid():
            return None
    return usec / 2_000_000


def _one_line(value: str | int) -> str:
    return str(value).replace("\n", " ")


def unset_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Remove the notify variables so forked children and job code do not inherit them.

    Call it after building the ``Notifier``: only the main process may speak to
    systemd (``NotifyAccess=main``), and a child that believed otherwise would
    just have its messages dropped, or worse, a grandchild started by a job
    would ping the watchdog for a wedged supervisor.
    """
    env = os.environ if environ is None else environ
    for name in ENVIRONMENT_VARIABLES:
        env.pop(name, None)


class Notifier:
    """One open datagram socket to systemd, plus the watchdog period it asked for."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (default: os.environ)."""
        env = os.environ if environ is None else environ
        self.address = _socket_address(env.get("NOTIFY_SOCKET"))
        self.watchdog_interval = _watchdog_interval(env) if self.address else None
        # Remembered so that a forked child holding a copy of this object stays silent.
        self._pid = os.getpid()
        self._sock: socket.socket | None = None
        self._logged_error = False

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a usable notify socket."""
        return self.address is not None

    def ready(self, status: str) -> None:
        """Startup finished (children forked): systemd may now start units ordered after us."""
        self.send(READY=1, STATUS=status)

    def status(self, text: str) -> None:
        """One line for ``systemctl status``, e.g. the pool size and jobs in flight."""
        self.send(STATUS=text)

    def reloading(self, status: str | None = None) -> None:
        """A SIGHUP reload has begun; answer with ``ready()`` when it is done.

        systemd 253+ with ``Type=notify-reload`` requires ``MONOTONIC_USEC`` to
        match the reload to its request; older versions ignore the field.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        if status is None:
            self.send(RELOADING=1, MONOTONIC_USEC=usec)
        else:
            self.send(RELOADING=1, MONOTONIC_USEC=usec, STATUS=status)

    def stopping(self, status: str | None = None) -> None:
        """Graceful stop has begun, so systemd shows "deactivating" instead of a hang."""
        if status is None:
            self.send(STOPPING=1)
        else:
            self.send(STOPPING=1, STATUS=status)

    def watchdog(self) -> None:
        """Tell the watchdog the main loop is alive; call every ``watchdog_interval``."""
        self.send(WATCHDOG=1)

    def send(self, **fields: str | int) -> bool:
        """Send one datagram of ``KEY=value`` lines; True if it was handed to the kernel.

        Newlines in values become spaces, because a newline would start a new
        field. The socket is non-blocking: if systemd's queue is full the
        message is dropped rather than stalling the loop that enforces job
        deadlines.
        """
        for name in fields:
            # Checked before the no-op exit so a typo fails in tests run outside systemd.
            if not _FIELD_NAME.match(name):
                raise ValueError(f"sd_notify field names are upper-case words, got {name!r}")
        if self.address is None or os.getpid() != self._pid or not fields:
            return False
        lines = (f"{name}={_one_line(value)}" for name, value in fields.items())
        payload = "\n".join(lines).encode("utf-8", "replace")
        try:
            self._socket().sendto(payload, self.address)
        except OSError as exc:
            if not self._logged_error:
                self._logged_error = True
                log.debug(
                    "cannot notify systemd at %r (further errors not logged): %s", self.address, exc
                )
            return False
        return True

    def close(self) -> None:
        """Close the socket; a later send opens a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            flags = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            self._sock = socket.socket(socket.AF_UNIX, flags)
            self._sock.setblocking(False)
        return self._sock
