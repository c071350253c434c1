"""Steering cron schedules at run time, for the whole cluster: pause, resume, run now; and
the list of every schedule supervisors fire, those of config.toml included.

A config.toml schedule lives in the files of the supervisors that fire it. Each of them
publishes the ones it fires (``publish_config``, every ``PUBLISH_EVERY`` seconds, an
entry lasting ``PUBLISHED_TTL`` unless published again), so a process with another
config (the dashboard, an operator's CLI) lists them all and can steer them by name.
Supervisors that share a namespace should carry the same ``[[schedules]]``; when two
publish different definitions under one name, the latest publish is listed.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from jobs.audit import record_action
from jobs.enqueue import enqueue_call
from jobs.errors import ScheduleNotFound
from jobs.firing import STATE_TTL
from jobs.options import Call, EnqueueOptions, new_job_id
from jobs.schedules import Schedule, ScheduleKeys, decode, list_schedules, trigger_job_id
from jobs.store.broker import Broker, default_broker
from jobs.store.connection import translated
from jobs.store.keys import check_name
from jobs.store.layouts import CRON_PAUSE, CRON_RESUME, SCHEDULES_PUBLISH

PUBLISH_EVERY = 10.0  # seconds between a supervisor's publishes of its config schedules
PUBLISHED_TTL = 35.0  # an entry outlives three missed publishes, then it is dropped

_encoder = msgspec.msgpack.Encoder()


class Listed(msgspec.Struct, frozen=True):
    """A schedule and where it comes from: ``config``, ``api`` or ``api (shadowed by
    config)`` (an API schedule whose name a config one takes: it does not fire)."""

    schedule: Schedule
    source: str


def publish_config(schedules: Sequence[Schedule], broker: Broker,
                   ttl: float = PUBLISHED_TTL) -> None:
    """Publish the config.toml schedules this supervisor fires (disabled ones too)."""
    if not schedules:
        return
    each: list[str | bytes] = []
    for s in schedules:
        each += SCHEDULES_PUBLISH.arg_item(name=s.name, definition=_encoder.encode(s))
    k = ScheduleKeys(broker)
    with translated(broker.url):
        broker.runner.run(broker.scripts.schedules_publish,
                          SCHEDULES_PUBLISH.keys(definitions=k.published(),
                                                 expiry=k.published_until()),
                          SCHEDULES_PUBLISH.args(each, ttl_ms=int(ttl * 1000)))


def published(broker: Broker | None = None) -> list[Schedule]:
    """The config.toml schedules live supervisors fire, by name."""
    b = broker or default_broker()
    k = ScheduleKeys(b)
    with translated(b.url):
        pipe = b.client.pipeline(transaction=False)
        pipe.time()
        pipe.hgetall(k.published())
        pipe.zrangebyscore(k.published_until(), "-inf", "+inf", withscores=True)
        (seconds, micros), raw, until = pipe.execute()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    live = {name.decode() for name, ends in until if ends > now_ms}
    found = (decode(v) for name, v in sorted(raw.items()) if name.decode() in live)
    return [s for s in found if s is not None]


def every_schedule(broker: Broker | None = None,
                   config: Sequence[Schedule] = ()) -> list[Listed]:
    """Every schedule: config ones (``config``, this process's file, then those only live
    supervisors publish; a published definition wins, since it is what fires), then API
    ones. ``jobvisor schedules``, the dashboard and the API list this."""
    b = broker or default_broker()
    live = {s.name: s for s in published(b)}
    configured = [live.get(s.name, s) for s in config]
    mine = {s.name for s in config}
    configured += [s for name, s in live.items() if name not in mine]
    taken = {s.name for s in configured}
    listed = [Listed(s, "config") for s in configured]
    listed += [Listed(s, "api (shadowed by config)" if s.name in taken else "api")
               for s in list_schedules(b)]
    return listed


def find(name: str, broker: Broker | None = None, config: Sequence[Schedule] = ()) -> Schedule:
    """The schedule supervisors fire under ``name`` (config.toml wins a name clash)."""
    for listed in every_schedule(broker, config):
        if listed.schedule.name == name and not listed.source.endswith("(shadowed by config)"):
            return listed.schedule
    raise ScheduleNotFound(
        f"no schedule {name!r}: no live supervisor's config.toml has it and none was "
        "added through the API; `jobvisor schedules` lists them")


def paused_schedules(broker: Broker | None = None) -> dict[str, float]:
    """Paused schedules by name, with when each was paused (epoch seconds)."""
    b = broker or default_broker()
    with translated(b.url):
        raw = b.client.hgetall(ScheduleKeys(b).paused())
    return {name.decode(): int(at) / 1000.0 for name, at in raw.items()}


def pause_schedule(name: str, broker: Broker | None = None, *,
                   config: Sequence[Schedule] = (), who: str = "library") -> bool:
    """Stop firing ``name`` on every supervisor until ``resume_schedule``; False when it
    was paused already. A tick claimed before the pause still gets its job."""
    b = broker or default_broker()
    find(check_name("schedule name", name), b, config)
    with translated(b.url):
        added = b.runner.run(b.scripts.cron_pause,
                             CRON_PAUSE.keys(paused=ScheduleKeys(b).paused()),
                             CRON_PAUSE.args(name=name))
    if added:
        _record(b, who, "pause", name)
    return bool(added)


def resume_schedule(name: str, broker: Broker | None = None, *,
                    config: Sequence[Schedule] = (), who: str = "library") -> bool:
    """Fire ``name`` again from its next tick; the ticks missed while it was paused never
    run (see ``jobs.firing``). False when it was not paused."""
    b = broker or default_broker()
    k = ScheduleKeys(b)
    check_name("schedule name", name)
    with translated(b.url):
        resumed = b.runner.run(b.scripts.cron_resume,
                               CRON_RESUME.keys(paused=k.paused(), state=k.state(name)),
                               CRON_RESUME.args(name=name, keep_ms=int(STATE_TTL * 1000)))
    if not resumed:
        find(name, b, config)  # an unknown name is an error; a known one was not paused
        return False
    _record(b, who, "resume", name)
    return True


def trigger_schedule(name: str, broker: Broker | None = None, *,
                     config: Sequence[Schedule] = (), who: str = "library") -> str:
    """Enqueue the job of schedule ``name`` now, paused or not; its id (``cron-now.<name>.
    <random>``) is never a tick's, so the next tick still fires as planned."""
    b = broker or default_broker()
    s = find(check_name("schedule name", name), b, config)
    options = EnqueueOptions(queue=s.queue, priority=s.priority,
                             job_id=trigger_job_id(s.name, new_job_id()))
    job = enqueue_call(Call(s.job, tuple(s.args), dict(s.kwargs), options), b)
    _record(b, who, "trigger", name, job.id)
    return job.id


def _record(broker: Broker, who: str, action: str, name: str, job_id: str = "") -> None:
    """Who steered which schedule, for the audit trail."""
    record_action(broker, who, action, "", 1 if job_id else 0, f"schedule {name}",
                  job_id=job_id)
