"""The audit trail: who did what, as a ``jobs.actions`` log line and an ``action`` event.

Every surface that changes state on an operator's word (bulk actions, copies, schedule
and queue steering, scale, reload, pool pause) records it here, so the log and
``jobvisor events`` tell the same story whichever surface was used.
"""

from __future__ import annotations

import logging

from jobs.store.broker import Broker

log = logging.getLogger("jobs.actions")


def record_action(broker: Broker, who: str, action: str, queue: str, count: int,
                  scope: str, *, job_id: str = "") -> None:
    """Log and append to the events stream that ``who`` did ``action`` to ``count`` things
    (jobs, or workers for a scale) of ``queue`` ("" when it is no queue's), ``scope``
    saying which; ``job_id``: the job the action enqueued, if one."""
    log.info("%s: %s queue=%s count=%d scope=%s%s", who, action, queue or "-", count, scope,
             f" job={job_id}" if job_id else "")
    broker.jobs.event(e="action", who=who, action=action, q=queue, count=count, scope=scope,
                      **({"id": job_id} if job_id else {}))
