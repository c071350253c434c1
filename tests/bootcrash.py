"""A job module whose workers die right after fork: drives the crash-loop protection."""

import os

from jobs import job

os.register_at_fork(after_in_child=lambda: os._exit(3))


@job
def never_runs() -> None:
    """Registered so the module is a valid job module."""
