"""Logging set-up for the CLI only: one line per event on stderr (or a file), text or JSON."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import time
from collections.abc import Callable

from jobs.store.urls import redact

_ROLE = {"supervisor": "supervisor"}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return f"{t} {record.levelname:<7} [{os.getpid()}] {record.name}: {_redacted(msg)}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {"time": record.created, "level": record.levelname, "pid": os.getpid(),
                "logger": record.name, "message": _redacted(record.getMessage())}
        if record.exc_info:
            data["exception"] = _redacted(self.formatException(record.exc_info))
        return json.dumps(data)


def _redacted(text: str) -> str:
    """Every URL's password hidden, whether in its userinfo or its query string."""
    if "://" not in text:
        return text
    return " ".join(redact(w) if "://" in w else w for w in text.split(" "))


def configure(level: str = "INFO", fmt: str = "text",
              path: str | None = None) -> Callable[[], None]:
    """Install one handler on the root logger; return a function that reopens the file."""
    # Watched: a process that did not get SIGUSR1 (a worker) follows a rotated file at
    # its next line (one stat per line; workers log a few lines per hour, not per job).
    handler: logging.Handler = (logging.handlers.WatchedFileHandler(path) if path
                                else logging.StreamHandler())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

    def reopen() -> None:
        if isinstance(handler, logging.handlers.WatchedFileHandler):
            handler.acquire()  # emit() checks under this lock too
            try:
                handler.reopenIfNeeded()
            finally:
                handler.release()

    return reopen
