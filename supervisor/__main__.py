"""Entry point of ``jobvisor`` and ``python -m supervisor``.

SIGTTIN and SIGTTOU (scale up, scale down) stop a process by default: one sent while
the supervisor is still importing its libraries would freeze it for good. They are
blocked before anything else is imported; the supervisor unblocks them once its
handlers are in place (a signal sent meanwhile is acted on then), every other command
at once.
"""

import signal

JOB_CONTROL = {signal.SIGTTIN, signal.SIGTTOU}


def main() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, JOB_CONTROL)
    from supervisor.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
