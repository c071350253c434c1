"""Entry point of ``jobvisor`` and ``python -m supervisor``: blocks the job-control
signals first (see ``supervisor.job_control``), then runs the command line."""

import signal

from supervisor.job_control import JOB_CONTROL


def main() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, JOB_CONTROL)
    from supervisor.cli.main import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
