"""How the supervisor loop sleeps: until a signal, a message from a thread, or a timeout.

Signal handlers only append the signal number to a deque; ``signal.set_wakeup_fd``
writes a byte to a pipe so a ``select`` on it returns at once. The duties threads append
control messages and cancel requests the same way and write the byte themselves.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections import deque
from collections.abc import Iterable

from jobs.cluster import Control


class Wakeup:
    def __init__(self) -> None:
        self.signals: deque[int] = deque()
        self.controls: deque[Control] = deque()  # ``jobvisor scale``, ``reload --host``
        self.cancels: deque[tuple[str, str]] = deque()  # (job id, reason): running jobs
        self._r = self._w = -1

    def install(self, signals: Iterable[int]) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        for sig in signals:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)

    def control_arrived(self, message: Control) -> None:
        """Called on the control thread: hand the message to the loop and wake it."""
        self.controls.append(message)
        self.poke()

    def cancel_arrived(self, job_id: str, reason: str) -> None:
        """Called on the duties thread: a running job of ours is to be canceled."""
        self.cancels.append((job_id, reason))
        self.poke()

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
