"""Process titles through one function, so `ps` shows what each process is doing."""

from __future__ import annotations

import setproctitle

_BASE = setproctitle.getproctitle()


def set_title(text: str) -> None:
    setproctitle.setproctitle(f"jobvisor: {text}")
