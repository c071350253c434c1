"""Cron schedules: their definition, their fire times, and the ones producers store in Redis.

A ``Schedule`` comes from ``[[schedules]]`` in config.toml or from ``add()``; supervisors
fire the union of both (``jobs.firing``). Fire times ("ticks") are whole epoch seconds
computed by croniter in the schedule's time zone, so every supervisor computes the same
ticks and the same job id for each of them.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import msgspec
from croniter import CroniterBadDateError, CroniterError, croniter
from msgspec import Meta

from jobs.environment import library_settings
from jobs.errors import ConfigurationError
from jobs.options import Call, EnqueueOptions, check_function_name, prepare
from jobs.priority import Priority, parse_priority
from jobs.settings import zone
from jobs.store.broker import Broker, default_broker
from jobs.store.connection import translated
from jobs.store.keys import check_name

Name = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:\-]{1,128}$")]
Misfire = Literal["skip", "run_once"]
MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
# croniter's H (hashed) and R (random) fields: R differs from one process to the next,
# which would make supervisors disagree about the ticks.
_HASHED_OR_RANDOM = re.compile(r"(^|,)[hr](\(|/|,|$)", re.IGNORECASE)
MAX_JOB_ID = 128


class Schedule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Enqueue ``job(*args, **kwargs)`` on ``queue`` at every tick of ``cron``.

    ``cron`` has 5 fields (minute hour day month weekday), or 6 with seconds last
    (croniter's order: ``* * * * * */2`` is every 2 seconds), or an ``@hourly``-style
    macro. Ticks are computed in ``timezone`` (IANA name; none: ``[scheduler] timezone``,
    fixed when the schedule is defined, see ``SchedulerSettings``). Jobs go to ``queue``
    (none: ``[defaults] queue``, fixed the same way). ``jitter`` delays each job
    by a random 0..jitter seconds. When no supervisor fired a tick on time,
    ``misfire="skip"`` drops it; ``"run_once"`` runs the latest missed tick once if it
    is at most ``misfire_grace`` seconds old.

    Constructing one checks the cron expression, time zone, job name and priority;
    ``add()`` also checks types and ranges, as loading config.toml does.
    """

    name: Name
    cron: str
    job: str
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    queue: Name | None = None
    priority: int | str = int(Priority.NORMAL)
    timezone: str | None = None
    jitter: Annotated[float, Meta(ge=0, le=86400)] = 0.0
    misfire: Misfire = "skip"
    misfire_grace: Annotated[float, Meta(gt=0, le=366 * 86400)] = 60.0
    enabled: bool = True

    def __post_init__(self) -> None:
        def refuse(problem: str) -> ConfigurationError:
            return ConfigurationError(f"schedule {self.name!r}: {problem}")

        try:
            check_name("schedule name", self.name)
            check_function_name(self.job)
            if self.queue is not None:
                check_name("queue", self.queue)
            parse_priority(self.priority)
        except ConfigurationError as exc:
            raise refuse(str(exc)) from None
        if self.misfire not in ("skip", "run_once"):
            raise refuse(f"misfire must be 'skip' or 'run_once', got {self.misfire!r}")
        try:
            zone(self.timezone or "UTC")
        except ConfigurationError as exc:
            raise refuse(str(exc)) from None
        problem = cron_problem(self.cron)
        if problem:
            raise refuse(problem)

    @property
    def zone(self) -> ZoneInfo:
        """The zone of the ticks (UTC for a schedule not yet given its defaults)."""
        return zone(self.timezone or "UTC")

    def with_defaults(self, queue: str, timezone: str) -> Schedule:
        """This schedule with the queue and zone it leaves unset taken from the
        configuration, once, where it is defined (``SchedulerSettings``)."""
        if self.queue is not None and self.timezone is not None:
            return self
        return msgspec.structs.replace(self, queue=self.queue or queue,
                                       timezone=self.timezone or timezone)


def cron_problem(expr: str) -> str | None:
    """What is wrong with a cron expression, or None when croniter can compute its ticks."""
    fields = expr.split() if isinstance(expr, str) else []
    macro = len(fields) == 1 and fields[0].lower() in MACROS
    if not macro and len(fields) not in (5, 6):
        return (f"cron expression {expr!r} needs 5 fields (minute hour day month weekday), "
                f"6 with seconds last, or one of {', '.join(MACROS)}")
    if any(_HASHED_OR_RANDOM.search(f) for f in fields):
        return (f"cron expression {expr!r}: H and R fields are not supported (every "
                "supervisor must compute the same fire times)")
    try:
        croniter(expr, datetime(2000, 1, 1, tzinfo=zone("UTC"))).get_next(float)
    except CroniterBadDateError:
        return f"cron expression {expr!r} never matches a date"
    except (CroniterError, ValueError, KeyError) as exc:
        return f"cron expression {expr!r} is not valid: {exc}"
    return None


# -- ticks ---------------------------------------------------------------------------------

def next_ticks(schedule: Schedule, after: float, count: int = 1) -> list[int]:
    """The first ``count`` ticks strictly after ``after`` (epoch seconds)."""
    it = croniter(schedule.cron, datetime.fromtimestamp(int(after), schedule.zone))
    out: list[int] = []
    try:
        for _ in range(count):
            out.append(int(it.get_next(float)))
    except CroniterBadDateError:
        pass  # no further date within croniter's search window: the schedule has ended
    return out


def next_tick(schedule: Schedule, after: float) -> int | None:
    ticks = next_ticks(schedule, after)
    return ticks[0] if ticks else None


def latest_tick(schedule: Schedule, now: float) -> int | None:
    """The latest tick at or before ``now``."""
    # croniter's get_prev is strict; ticks are whole seconds, so start one second on.
    it = croniter(schedule.cron, datetime.fromtimestamp(int(now) + 1, schedule.zone))
    try:
        return int(it.get_prev(float))
    except CroniterBadDateError:
        return None


def tick_job_id(name: str, tick: int) -> str:
    """The job id of one tick: the same on every supervisor, so enqueueing is idempotent."""
    return _job_id("cron", name, str(tick), MAX_JOB_ID - 32)


def trigger_job_id(name: str, token: str) -> str:
    """The job id of a run asked for by hand (``token`` at most 16 characters): ``cron-now.``
    starts no tick's id, so the two never collide."""
    return _job_id("cron-now", name, token, MAX_JOB_ID - 40)


def _job_id(prefix: str, name: str, suffix: str, keep: int) -> str:
    job_id = f"{prefix}.{name}.{suffix}"
    if len(job_id) <= MAX_JOB_ID:
        return job_id
    # Long names keep a readable prefix and a digest that keeps them apart.
    digest = hashlib.blake2b(name.encode(), digest_size=6).hexdigest()
    return f"{prefix}.{name[:keep]}.{digest}.{suffix}"


def tick_call(schedule: Schedule, tick: int, delay: float | None = None) -> Call:
    options = EnqueueOptions(queue=schedule.queue, priority=schedule.priority,
                             job_id=tick_job_id(schedule.name, tick), delay=delay)
    return Call(schedule.job, tuple(schedule.args), dict(schedule.kwargs), options)


# -- schedules stored in Redis -------------------------------------------------------------

class ScheduleKeys:
    """Key names of schedules (built here from the namespace, like ``jobs.store.keys``)."""

    __slots__ = ("ns",)

    def __init__(self, broker: Broker) -> None:
        self.ns = broker.keys.root

    def definitions(self) -> str:
        """Hash: name -> encoded ``Schedule`` added through the API."""
        return f"{self.ns}:schedules"

    def version(self) -> str:
        """Counter bumped by every add/remove, so supervisors re-read definitions only then."""
        return f"{self.ns}:schedules:version"

    def state(self, name: str) -> str:
        """Hash of one schedule's firing state (see ``jobs.firing``)."""
        return f"{self.ns}:schedule:{name}"

    def paused(self) -> str:
        """Hash: name -> when it was paused (server ms), for config and API schedules."""
        return f"{self.ns}:schedules:paused"

    def published(self) -> str:
        """Hash: name -> encoded ``Schedule`` of a config.toml a live supervisor fires."""
        return f"{self.ns}:schedules:config"

    def published_until(self) -> str:
        """Sorted set: name -> when its published entry runs out (server ms)."""
        return f"{self.ns}:schedules:config:until"


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Schedule)


def checked(schedule: Schedule, max_payload_bytes: int = 1024 * 1024) -> Schedule:
    """The schedule validated as config.toml is (types, ranges) and its job encodable."""
    if not isinstance(schedule, Schedule):
        raise ConfigurationError(f"expected a Schedule, got {type(schedule).__name__}")
    # Encoding the job first names an argument that cannot be stored.
    prepare(tick_call(schedule, 0), default_queue=schedule.queue or "default",
            default_priority=0, max_bytes=max_payload_bytes)
    try:
        return msgspec.convert(msgspec.to_builtins(schedule), Schedule)
    except msgspec.ValidationError as exc:
        raise ConfigurationError(f"schedule {schedule.name!r}: {exc}") from None


def add(schedule: Schedule, broker: Broker | None = None) -> None:
    """Store (or replace) a schedule; every supervisor of the namespace fires it.

    A schedule in a supervisor's config.toml with the same name takes precedence. One
    without a queue or time zone is stored with ``[defaults] queue`` (the broker's) and
    ``[scheduler] timezone`` (of ``JOBVISOR_CONFIG`` and the environment).
    """
    b = broker or default_broker()
    if isinstance(schedule, Schedule) and (schedule.timezone is None or schedule.queue is None):
        schedule = schedule.with_defaults(b.defaults.queue,
                                          library_settings().scheduler.timezone)
    schedule = checked(schedule, b.defaults.max_payload_bytes)
    k = ScheduleKeys(b)
    with translated(b.url):
        pipe = b.client.pipeline(transaction=True)
        pipe.hset(k.definitions(), schedule.name, _encoder.encode(schedule))
        pipe.incr(k.version())
        pipe.execute()


def remove(name: str, broker: Broker | None = None) -> bool:
    """Delete a stored schedule; False when there was none of that name."""
    b = broker or default_broker()
    k = ScheduleKeys(b)
    with translated(b.url):
        pipe = b.client.pipeline(transaction=True)
        pipe.hdel(k.definitions(), name)
        pipe.incr(k.version())
        removed, _ = pipe.execute()
    return bool(removed)


def get(name: str, broker: Broker | None = None) -> Schedule | None:
    b = broker or default_broker()
    with translated(b.url):
        raw = b.client.hget(ScheduleKeys(b).definitions(), name)
    return decode(raw) if raw else None


def list_schedules(broker: Broker | None = None) -> list[Schedule]:
    """Every schedule added through the API, by name (unreadable entries left out)."""
    b = broker or default_broker()
    with translated(b.url):
        raw = b.client.hgetall(ScheduleKeys(b).definitions())
    found = (decode(v) for _, v in sorted(raw.items()))
    return [s for s in found if s is not None]


def decode(raw: bytes) -> Schedule | None:
    try:
        return _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return None


def union(config: list[Schedule], api: list[Schedule]) -> list[Schedule]:
    """The schedules supervisors fire: config ones, then API ones whose name is not taken.

    config.toml wins a name clash: the file is what operators review and deploy, and a
    producer should not be able to replace a schedule it does not own.
    """
    taken = {s.name for s in config}
    return [*config, *(s for s in api if s.name not in taken)]
