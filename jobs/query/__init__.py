"""One query layer for every operator surface: the CLI, the web app and the HTTP API read
and act through these functions, so each shows the same figures.

- ``listing``: jobs of one queue and state, filtered, a page at a time behind a cursor.
- ``record_action`` (from ``jobs.audit``): the audit trail every action writes.
- ``bulk``: requeue, cancel or delete chosen jobs or every job a filter matches; clear.
- ``groups``: dead letters grouped by function and error type.
- ``views``: a job as every surface shows it (plain data, JSON-ready).
- ``schedules``: every cron schedule with its next and last fire and paused flag.
- ``batches``: batches newest first, a page at a time, with progress and callbacks.
"""

from jobs.audit import record_action
from jobs.query.batches import BatchPage, BatchView, batch_members, batch_view, list_batches
from jobs.query.bulk import ACTIONS, Action, act_on, act_on_matching, clear_queue
from jobs.query.filters import JobFilter
from jobs.query.groups import DeadGroup, dead_groups
from jobs.query.listing import LISTED_STATES, JobPage, list_jobs
from jobs.query.schedules import schedule_rows
from jobs.query.views import iso, job_view

__all__ = [
    "ACTIONS",
    "LISTED_STATES",
    "Action",
    "BatchPage",
    "BatchView",
    "DeadGroup",
    "JobFilter",
    "JobPage",
    "act_on",
    "act_on_matching",
    "batch_members",
    "batch_view",
    "clear_queue",
    "dead_groups",
    "iso",
    "job_view",
    "list_batches",
    "list_jobs",
    "record_action",
    "schedule_rows",
]
