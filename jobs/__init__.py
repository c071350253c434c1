"""jobvisor's job library: define, enqueue, follow and run jobs on Redis.

Producers need only this package::

    from jobs import job, Queue, Priority, Retry
"""

from jobs.backoff import Backoff, BackoffKind
from jobs.batch import Batch, BatchHandle, BatchProgress, batch
from jobs.chain import Chain, chain
from jobs.context import JobContext, current
from jobs.decorator import JobFunction, job
from jobs.enqueue import enqueue_many
from jobs.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigurationError,
    DecryptionError,
    Fail,
    JobCanceled,
    JobFailed,
    JobKilled,
    JobNotFound,
    JobsError,
    JobTimeout,
    PayloadTooLarge,
    ResultTimeout,
    Retry,
    ScheduleNotFound,
    StaleToken,
    UnknownFunction,
    UnknownLimit,
)
from jobs.job import Job
from jobs.options import Call, EnqueueOptions
from jobs.priority import Priority
from jobs.queue import Queue, queue_counts
from jobs.records import AttemptError, ErrorKind, JobRecord
from jobs.schedule_control import pause_schedule, resume_schedule, trigger_schedule
from jobs.schedules import Schedule
from jobs.settings import JobDefaults, RedisSettings
from jobs.states import JobState
from jobs.store.broker import Broker, connect, default_broker
from jobs.worker import Worker, reclaim, run_promoter

__all__ = [
    "AttemptError",
    "Backoff",
    "BackoffKind",
    "Batch",
    "BatchHandle",
    "BatchProgress",
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "Call",
    "Chain",
    "ConfigurationError",
    "DecryptionError",
    "EnqueueOptions",
    "ErrorKind",
    "Fail",
    "Job",
    "JobCanceled",
    "JobContext",
    "JobDefaults",
    "JobFailed",
    "JobFunction",
    "JobKilled",
    "JobNotFound",
    "JobRecord",
    "JobState",
    "JobTimeout",
    "JobsError",
    "PayloadTooLarge",
    "Priority",
    "Queue",
    "RedisSettings",
    "ResultTimeout",
    "Retry",
    "Schedule",
    "ScheduleNotFound",
    "StaleToken",
    "UnknownFunction",
    "UnknownLimit",
    "Worker",
    "batch",
    "chain",
    "connect",
    "current",
    "default_broker",
    "enqueue_many",
    "job",
    "pause_schedule",
    "queue_counts",
    "reclaim",
    "resume_schedule",
    "run_promoter",
    "trigger_schedule",
]
