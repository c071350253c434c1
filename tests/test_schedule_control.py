"""Steering cron schedules at run time: pause and resume for the whole cluster (missed
ticks never run), trigger now, and the config schedules supervisors publish."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import (
    Broker,
    Job,
    JobState,
    Schedule,
    ScheduleNotFound,
    Worker,
    pause_schedule,
    resume_schedule,
    schedules,
    trigger_schedule,
)
from jobs.events import recent_events
from jobs.firing import Firer, read_states, server_clock
from jobs.query import schedule_rows
from jobs.schedule_control import paused_schedules, publish_config, published
from jobs.schedules import ScheduleKeys
from tests import jobfuncs  # noqa: F401 (registers the functions the jobs name)
from tests.helpers import wait_until
from tests.test_schedules import SCHEDULE, Clock, enqueued

ROOT = Path(__file__).parent.parent
EVERY_SECOND = Schedule(name="held", cron="* * * * * *", job="tests.jobfuncs:add", args=[1, 2],
                        misfire="run_once", misfire_grace=3600)


def test_a_paused_schedule_is_not_fired_and_resume_skips_the_ticks_it_missed(broker):
    s = EVERY_SECOND
    server_now = server_clock(broker)()
    # The firers' clock runs a minute behind the server's, whose time the resume records.
    clock = Clock(int(server_now) - 60 + 0.5)
    firer, other = Firer(broker, clock), Firer(broker, clock)
    firer.run([s])  # baseline
    clock.now += 1
    assert [f.tick for f in firer.run([s]).fired] == [int(clock.now)]
    assert pause_schedule("held", broker, config=[s]) is True
    assert pause_schedule("held", broker, config=[s]) is False  # already
    assert set(paused_schedules(broker)) == {"held"}
    for _ in range(3):
        clock.now += 1
        assert firer.run([s]).fired == [] and other.run([s]).fired == []
    assert not other.claim(s, int(clock.now))  # a firer that read the state before the pause
    (row,) = schedule_rows(broker, [s])
    assert row["paused"] and row["next"] == [] and row["last"]["state"] == "queued"
    assert resume_schedule("held", broker, config=[s]) is True
    assert resume_schedule("held", broker, config=[s]) is False  # not paused any more
    # The latest tick missed while paused is on time for this clock, and run_once would
    # catch up on it anyway: neither firer runs it.
    assert firer.run([s]).fired == [] and other.run([s]).fired == []
    resumed = read_states(broker, ["held"])["held"].resumed
    assert resumed >= int(server_now)
    clock.now = resumed + 1.2
    assert [f.tick for f in other.run([s]).fired] == [resumed + 1]
    assert len(enqueued(broker)) == 2
    (row,) = schedule_rows(broker, [s])
    assert not row["paused"] and len(row["next"]) == 3


def test_trigger_enqueues_the_job_now_under_an_id_no_tick_uses(broker):
    s = Schedule(name="digest", cron="0 8 * * mon", job="tests.jobfuncs:add", args=[20],
                 kwargs={"b": 22}, queue="cron-q", priority="HIGH")
    schedules.add(s, broker)
    job_id = trigger_schedule("digest", broker)
    assert job_id.startswith("cron-now.digest.") and job_id not in enqueued(broker)
    job = Job.fetch(job_id, broker)
    assert (job.queue, job.priority, job.state) == ("cron-q", 20, JobState.QUEUED)
    Worker(["cron-q"], broker=broker).run_until_empty()
    assert job.result(timeout=5) == 42
    assert pause_schedule("digest", broker)
    again = trigger_schedule("digest", broker)  # paused or not: a run asked for by hand
    assert again != job_id and Job.fetch(again, broker).state is JobState.QUEUED
    local = Schedule(name="local", cron="* * * * *", job="tests.jobfuncs:add", args=[1, 1])
    by_hand = trigger_schedule("local", broker, config=[local])
    assert by_hand.startswith("cron-now.local.")
    for steer in (trigger_schedule, pause_schedule, resume_schedule):
        with pytest.raises(ScheduleNotFound, match="no schedule 'nope'"):
            steer("nope", broker)
    actions = [(e["who"], e["action"], e["scope"], e.get("id"))
               for e in recent_events(broker, 10) if e["e"] == "action"]
    assert actions == [("library", "trigger", "schedule digest", job_id),
                       ("library", "pause", "schedule digest", None),
                       ("library", "trigger", "schedule digest", again),
                       ("library", "trigger", "schedule local", by_hand)]


def test_published_config_schedules_are_listed_until_their_entry_runs_out(broker):
    mine = Schedule(name="from-file", cron="0 3 * * *", job="tests.jobfuncs:add", args=[1, 2])
    theirs = Schedule(name="other-host", cron="0 4 * * *", job="tests.jobfuncs:add",
                      args=[3, 4])
    schedules.add(Schedule(name="other-host", cron="* * * * *", job="a:b"), broker)
    publish_config([theirs], broker, ttl=0.5)
    assert published(broker) == [theirs]
    rows = schedule_rows(broker, [mine], 1)
    assert [(r["name"], r["source"], r["cron"]) for r in rows] == [
        ("from-file", "config", "0 3 * * *"), ("other-host", "config", "0 4 * * *"),
        ("other-host", "api (shadowed by config)", "* * * * *")]
    wait_until(lambda: published(broker) == [], timeout=5, what="the entry to run out")
    publish_config([mine], broker)  # the next publish drops the entry that ran out
    assert broker.client.hkeys(ScheduleKeys(broker).published()) == [b"from-file"]
    assert broker.client.zrange(ScheduleKeys(broker).published_until(), 0, -1) == [
        b"from-file"]


# -- a real supervisor and the CLI -------------------------------------------------------------

def ticks(broker: Broker, name: str) -> list[int]:
    return sorted(int(i.rsplit(".", 1)[1]) for i in enqueued(broker)
                  if i.startswith(f"cron.{name}."))


def test_a_supervisor_publishes_its_schedules_and_any_cli_pauses_resumes_triggers_them(
        sup, tmp_path, server, namespace):
    r = sup(workers=1, tail=SCHEDULE.format(name="tick", args="[2, 3]"))
    r.wait_workers(1)
    broker = r.broker
    wait_until(lambda: [s.name for s in published(broker)] == ["tick"], timeout=10,
               what="the supervisor to publish its schedule")
    wait_until(lambda: ticks(broker, "tick"), timeout=10, what="a first tick")
    bare = tmp_path / "bare.toml"  # another host's config: no [[schedules]] of its own
    bare.write_text(f'[redis]\nurl = "{server.url}"\nnamespace = "{namespace}"\n')

    def cli(*args: str, ok: bool = True) -> str:
        out = subprocess.run([sys.executable, "-m", "supervisor", "--config", str(bare),
                              "schedules", *args], capture_output=True, text=True,
                             timeout=30, cwd=ROOT)
        assert (out.returncode == 0) == ok, (out.returncode, out.stdout, out.stderr)
        return out.stdout + out.stderr

    rows = json.loads(cli("--json"))
    assert [(x["name"], x["source"], x["paused"]) for x in rows] == [("tick", "config", False)]
    assert cli("pause", "tick") == "schedule tick: paused on every supervisor\n"
    paused_at = paused_schedules(broker)["tick"]
    clock = server_clock(broker)
    wait_until(lambda: clock() > paused_at + 3.2, timeout=10, what="three ticks to pass")
    assert all(t < paused_at for t in ticks(broker, "tick"))
    assert "tick  [config, paused since" in cli()
    assert cli("resume", "tick") == "schedule tick: resumed: it fires from its next tick on\n"
    resumed = read_states(broker, ["tick"])["tick"].resumed
    wait_until(lambda: ticks(broker, "tick")[-1] > resumed, timeout=10,
               what="a tick after the resume")
    assert not [t for t in ticks(broker, "tick") if paused_at < t <= resumed]
    said = cli("trigger", "tick")
    assert said.startswith("schedule tick: enqueued job cron-now.tick.")
    assert Job(said.split()[-1], broker).result(timeout=15) == 5
    assert "no schedule 'nope'" in cli("pause", "nope", ok=False)
