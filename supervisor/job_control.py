"""The job-control signals, SIGTTIN and SIGTTOU (scale up, scale down).

Their default action stops a process: one sent while the supervisor is still importing
its libraries would freeze it for good. The entry point blocks them before anything
else is imported; the supervisor unblocks them once its handlers are in place (a signal
sent meanwhile is acted on then), every other command at once.
"""

import signal

JOB_CONTROL = {signal.SIGTTIN, signal.SIGTTOU}
