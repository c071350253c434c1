"""A job module that holds the supervisor's boot until the test opens a gate file.

Importing it announces that the supervisor is booting (``<gate>.reached``), then waits
(at most 20 s) for ``<gate>`` to exist: the test acts on a supervisor mid-boot.
"""

import os
import time
from pathlib import Path

from jobs import job

_gate = Path(os.environ["JOBVISOR_TEST_GATE"])
Path(f"{_gate}.reached").touch()
_until = time.monotonic() + 20
while not _gate.exists() and time.monotonic() < _until:
    time.sleep(0.01)


@job
def nothing() -> None:
    """Registered so the module is a valid job module."""
