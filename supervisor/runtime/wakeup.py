"""How the supervisor loop sleeps: until a signal, a poke from a thread, or a timeout.

Signal handlers only append the signal number to a deque; ``signal.set_wakeup_fd``
writes a byte to a pipe so a ``select`` on it returns at once.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections import deque
from collections.abc import Iterable


class Wakeup:
    def __init__(self) -> None:
        self.signals: deque[int] = deque()
        self._r = self._w = -1

    def install(self, signals: Iterable[int]) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        for sig in signals:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)

    def poke(self) -> None:
        """Wake the loop from another thread."""
        with contextlib.suppress(OSError):
            os.write(self._w, b"p")

    def wait(self, timeout: float) -> None:
        try:
            ready, _, _ = select.select([self._r], [], [], timeout)
        except InterruptedError:
            return
        if ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._r, 4096):
                    pass

    def close_in_child(self) -> None:
        """In a forked child: drop the pipe and stop forwarding signals to it."""
        os.close(self._r)
        os.close(self._w)
        signal.set_wakeup_fd(-1)
