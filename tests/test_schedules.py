"""Cron schedules: ticks, DST, misfires, exactly-once firing, the API, config, reload, CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobs import Broker, ConfigurationError, Job, JobState, RedisSettings, Schedule, schedules
from jobs.enqueue import enqueue_call
from jobs.firing import Firer, read_states
from jobs.schedules import latest_tick, next_ticks, tick_call, tick_job_id
from supervisor.config import load_config
from supervisor.errors import ConfigError
from tests.helpers import wait_until

ROOT = Path(__file__).parent.parent


class Clock:
    """A clock the test moves by hand (epoch seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def utc(tick: int) -> str:
    return datetime.fromtimestamp(tick, UTC).strftime("%Y-%m-%d %H:%M:%S")


def enqueued(broker: Broker) -> dict[str, int]:
    """How many times each cron job id was created, from the events stream."""
    counts: dict[str, int] = {}
    for _, fields in broker.client.xrange(broker.keys.events()):
        job_id = fields.get(b"id", b"").decode()
        if fields[b"e"] in (b"enqueued", b"scheduled") and job_id.startswith("cron."):
            counts[job_id] = counts.get(job_id, 0) + 1
    return counts


HOURLY = Schedule(name="hourly", cron="0 * * * *", job="tests.jobfuncs:add", args=[1, 2])


# -- definitions and ticks -----------------------------------------------------------------

@pytest.mark.parametrize(("fields", "message"), [
    ({"cron": "61 * * * *"}, "cron expression '61 * * * *' is not valid"),
    ({"cron": "0 0 * * * * 2030"}, "needs 5 fields"),
    ({"cron": "R * * * *"}, "H and R fields are not supported"),
    ({"cron": "0 0 30 2 *"}, "never matches a date"),
    ({"timezone": "Europe/Berln"}, "unknown time zone 'Europe/Berln'"),
    ({"job": "not a function"}, "job name 'not a function' is not valid"),
    ({"misfire": "later"}, "misfire must be 'skip' or 'run_once'"),
    ({"priority": "urgent"}, "priority 'urgent' is neither a level"),
])
def test_a_bad_schedule_is_refused_naming_it(fields, message):
    spec = {"name": "nightly", "cron": "0 3 * * *", "job": "tests.jobfuncs:add", **fields}
    with pytest.raises(ConfigurationError) as err:
        Schedule(**spec)
    assert str(err.value).startswith("schedule 'nightly': ") and message in str(err.value)


def test_ticks_use_the_time_zone_and_an_optional_seconds_field():
    every_2s = Schedule(name="fast", cron="* * * * * */2", job="tests.jobfuncs:add")
    assert next_ticks(every_2s, at("2026-01-01T00:00:00.5+00:00"), 3) == [
        int(at(f"2026-01-01T00:00:0{s}+00:00")) for s in (2, 4, 6)]
    ny = Schedule(name="ny", cron="0 9 * * mon-fri", job="tests.jobfuncs:add",
                  timezone="America/New_York")
    assert [utc(t) for t in next_ticks(ny, at("2026-01-02T15:00:00+00:00"), 2)] == [
        "2026-01-05 14:00:00", "2026-01-06 14:00:00"]  # Friday 10:00 NY is past; EST = UTC-5
    assert latest_tick(HOURLY, at("2026-01-01T10:00:00+00:00")) == at("2026-01-01T10:00:00+00:00")
    assert latest_tick(HOURLY, at("2026-01-01T10:59:59.9+00:00")) == at("2026-01-01T10:00:00Z")
    assert tick_job_id("hourly", 1767261600) == "cron.hourly.1767261600"
    long_id = tick_job_id("n" * 128, 1767261600)
    assert len(long_id) <= 128 and long_id != tick_job_id("n" * 127 + "m", 1767261600)


def test_dst_in_europe_berlin_as_croniter_defines_it():
    """Spring forward (2026-03-29, 02:00 -> 03:00): a daily 02:30 fires once, at 03:00 CEST.
    Fall back (2026-10-25, 03:00 -> 02:00): 02:30 happens twice and fires twice. Hourly
    ticks follow real hours: 23 on the short day, 25 on the long one."""
    def day(cron: str, date: str, tz: str = "Europe/Berlin") -> list[str]:
        """The ticks of one local calendar day, in UTC."""
        s = Schedule(name="dst", cron=cron, job="tests.jobfuncs:add", timezone=tz)
        midnight = datetime.fromisoformat(date).replace(tzinfo=s.zone)
        start, end = midnight.timestamp(), (midnight + timedelta(days=1)).timestamp()
        return [utc(t) for t in next_ticks(s, start - 1, 40) if t < end]

    assert day("30 2 * * *", "2026-03-29") == ["2026-03-29 01:00:00"]  # 03:00 CEST
    assert day("30 2 * * *", "2026-10-25") == ["2026-10-25 00:30:00",  # 02:30 CEST
                                               "2026-10-25 01:30:00"]  # 02:30 CET
    assert len(day("0 * * * *", "2026-03-29")) == 23
    assert len(day("0 * * * *", "2026-10-25")) == 25
    assert day("30 2 * * *", "2026-10-25", tz="UTC") == ["2026-10-25 02:30:00"]


def test_firer_follows_a_dst_night_with_its_clock(broker):
    s = Schedule(name="berlin", cron="30 2 * * *", job="tests.jobfuncs:add", args=[1, 1],
                 timezone="Europe/Berlin")
    clock = Clock(at("2026-10-24T22:00:00+00:00"))  # midnight in Berlin
    firer = Firer(broker, clock)
    firer.run([s])  # first sight
    fired = []
    for moment in ("00:30:00", "00:30:01", "01:30:00", "01:30:01", "02:30:00"):
        clock.now = at(f"2026-10-25T{moment}+00:00")
        fired += [utc(f.tick) for f in firer.run([s]).fired]
    assert fired == ["2026-10-25 00:30:00", "2026-10-25 01:30:00"]
    assert sorted(enqueued(broker).values()) == [1, 1]


# -- firing ----------------------------------------------------------------------------------

def test_each_tick_fires_once_with_the_schedules_settings(broker):
    s = Schedule(name="every-2s", cron="* * * * * */2", job="tests.jobfuncs:add", args=[2],
                 kwargs={"b": 3}, queue="cron-q", priority="HIGH")
    clock = Clock(at("2026-05-01T12:00:00.5+00:00"))
    firer = Firer(broker, clock)
    first = firer.run([s])
    assert first.fired == [] and first.wait == pytest.approx(1.5)  # baseline: first sight
    clock.now += 1.5  # 12:00:02.0, a tick
    fired = firer.run([s]).fired
    tick = int(at("2026-05-01T12:00:02+00:00"))
    assert [(f.tick, f.job_id) for f in fired] == [(tick, f"cron.every-2s.{tick}")]
    assert firer.run([s]).fired == []  # the same tick again: nothing
    assert Firer(broker, clock).run([s]).fired == []  # nor from another firer
    job = Job.fetch(fired[0].job_id, broker)
    assert (job.queue, job.priority, job.state) == ("cron-q", 20, JobState.QUEUED)
    assert (job.record.spec.args, job.record.spec.kwargs) == ([2], {"b": 3})
    clock.now += 2.2
    assert [f.tick for f in firer.run([s]).fired] == [tick + 2]
    state = read_states(broker, ["every-2s"])["every-2s"]
    assert (state.tick, state.job_id, state.sent) == (tick + 2, f"cron.every-2s.{tick + 2}", True)


def test_three_firers_racing_fire_each_tick_once(server, namespace, broker):
    """Three firers with their own connections run at every tick together, 30 ticks."""
    s = Schedule(name="race", cron="* * * * * *", job="tests.jobfuncs:add", args=[1, 1])
    clock = Clock(at("2026-05-01T12:00:00.2+00:00"))
    firers = [Firer(Broker(server.url, redis_settings=RedisSettings(namespace=namespace)),
                    clock) for _ in range(3)]
    barrier = threading.Barrier(3, timeout=10)
    wins = [0, 0, 0]

    def race(i: int) -> None:
        for _ in range(31):
            barrier.wait()  # all three at the same tick
            wins[i] += len(firers[i].run([s]).fired)
            if barrier.wait() == 0:
                clock.now += 1.0

    threads = [threading.Thread(target=race, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    counts = enqueued(broker)
    assert sum(wins) == 30 and len(counts) == 30 and set(counts.values()) == {1}


def test_misfire_skip_never_runs_missed_ticks(broker):
    clock = Clock(at("2026-05-01T08:00:00.1+00:00"))
    s = Schedule(name="hourly", cron="0 * * * *", job="tests.jobfuncs:add", args=[1, 2],
                 misfire="skip")
    firer = Firer(broker, clock)
    firer.run([s])  # baseline
    clock.now += 0.1
    assert len(firer.run([s]).fired) == 0  # 08:00 is before the baseline
    clock.now = at("2026-05-01T09:00:03+00:00")  # 3 s late: on time
    assert [utc(f.tick) for f in firer.run([s]).fired] == ["2026-05-01 09:00:00"]
    clock.now = at("2026-05-01T11:00:30+00:00")  # no supervisor ran at 10:00 and 11:00
    done = Firer(broker, clock).run([s])
    assert done.fired == [] and [utc(k.tick) for k in done.skipped] == ["2026-05-01 11:00:00"]
    assert len(enqueued(broker)) == 1


@pytest.mark.parametrize(("late", "fires"), [(30, True), (120, False)])
def test_misfire_run_once_runs_the_latest_missed_tick_within_grace(broker, late, fires):
    s = Schedule(name="catchup", cron="0 * * * *", job="tests.jobfuncs:add", args=[1, 2],
                 misfire="run_once", misfire_grace=60)
    clock = Clock(at("2026-05-01T07:30:00+00:00"))
    Firer(broker, clock).run([s])  # first seen at 07:30, then no supervisor until 11:00
    clock.now = at("2026-05-01T11:00:00+00:00") + late
    done = Firer(broker, clock).run([s])
    assert [utc(f.tick) for f in done.fired] == (["2026-05-01 11:00:00"] if fires else [])
    assert len(enqueued(broker)) == (1 if fires else 0)  # never 08:00, 09:00 or 10:00


def run_until_sent(firer: Firer, s: Schedule) -> list[int]:
    """Run passes until the schedule's claim is marked sent; the ticks they fired."""
    fired: list[int] = []

    def sent() -> bool:
        fired.extend(f.tick for f in firer.run([s]).fired)
        return read_states(firer.broker, [s.name])[s.name].sent

    wait_until(sent, timeout=5, what="the claim to be taken over")
    return fired


def test_a_claim_left_unsent_is_taken_over_once(broker, server, namespace):
    """A firer that stops after winning a tick: another sends the job after the lease;
    if the job did get in, the other only marks the claim sent."""
    s = Schedule(name="stalled", cron="* * * * * *", job="tests.jobfuncs:add", args=[1, 1])
    clock = Clock(at("2026-05-01T12:00:00.5+00:00"))
    crashed = Firer(broker, clock, lease=1.0)
    crashed.run([s])
    other = Firer(Broker(server.url, redis_settings=RedisSettings(namespace=namespace)),
                  clock, lease=1.0)
    for tick_at, enqueue_before_stopping in ((1, False), (2, True)):
        clock.now = at(f"2026-05-01T12:00:0{tick_at}+00:00")
        tick = int(clock.now)
        assert crashed.claim(s, tick)  # ... and stops here (or right after enqueueing)
        if enqueue_before_stopping:
            enqueue_call(tick_call(s, tick), broker)
        assert other.run([s]).fired == []  # the lease has not run out yet
        fired = run_until_sent(other, s)
        assert read_states(broker, ["stalled"])["stalled"].tick == tick
        assert fired == ([] if enqueue_before_stopping else [tick])
    assert set(enqueued(broker).values()) == {1} and len(enqueued(broker)) == 2


def test_api_schedules_are_fired_and_config_wins_a_name_clash(broker):
    api = Schedule(name="api-one", cron="* * * * * *", job="tests.jobfuncs:add", args=[1, 2])
    clash = Schedule(name="shared", cron="* * * * * *", job="tests.jobfuncs:add", args=[9, 9])
    config = Schedule(name="shared", cron="* * * * * *", job="tests.jobfuncs:add", args=[0, 1])
    schedules.add(api, broker)
    schedules.add(clash, broker)
    assert [s.name for s in schedules.list_schedules(broker)] == ["api-one", "shared"]
    # Stored with the queue and zone it left unset ([defaults] queue, [scheduler] timezone).
    assert schedules.get("api-one", broker) == api.with_defaults("default", "UTC")
    clock = Clock(at("2026-05-01T12:00:00.5+00:00"))
    firer = Firer(broker, clock)
    firer.run([config])
    clock.now += 1
    fired = {f.schedule: f.job_id for f in firer.run([config]).fired}
    assert set(fired) == {"api-one", "shared"}
    assert Job.fetch(fired["shared"], broker).record.spec.args == [0, 1]
    assert schedules.remove("api-one", broker) and not schedules.remove("api-one", broker)
    clock.now += 1
    assert [f.schedule for f in firer.run([config]).fired] == ["shared"]
    with pytest.raises(TypeError, match="argument 0 of tests.jobfuncs:add cannot be stored"):
        schedules.add(Schedule(name="bad", cron="* * * * *", job="tests.jobfuncs:add",
                               args=[object()]), broker)
    with pytest.raises(ConfigurationError, match="schedule 'bad': Expected `float`"):
        schedules.add(Schedule(name="bad", cron="* * * * *", job="tests.jobfuncs:add",
                               jitter="soon"), broker)  # type: ignore[arg-type]


def test_jitter_delays_the_job_not_the_tick(broker):
    s = Schedule(name="spread", cron="* * * * * *", job="tests.jobfuncs:add", args=[1, 1],
                 jitter=600)
    clock = Clock(at("2026-05-01T12:00:00.5+00:00"))
    firer = Firer(broker, clock)
    firer.run([s])
    clock.now += 1
    (fired,) = firer.run([s]).fired
    assert Job.fetch(fired.job_id, broker).state is JobState.SCHEDULED


# -- configuration ---------------------------------------------------------------------------

def write_config(tmp_path: Path, schedules_toml: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(schedules_toml)
    return path


def test_config_schedules_load_and_bad_ones_are_refused_with_the_key_path(tmp_path):
    good = load_config(write_config(tmp_path, """
[[schedules]]
name = "nightly"
cron = "0 3 * * *"
job = "examples.cpu:count_primes"
args = [200000]
timezone = "Europe/Berlin"
misfire = "run_once"
misfire_grace = 3600
"""))
    (s,) = good.schedules
    assert (s.name, s.args, s.timezone, s.misfire, s.queue, s.enabled) == (
        "nightly", [200000], "Europe/Berlin", "run_once", "default", True)
    cases = [
        ('name = "n"\ncron = "0 25 * * *"\njob = "a:b"',
         "schedule 'n': cron expression '0 25 * * *' is not valid", "$.schedules[0]"),
        ('name = "n"\ncron = "0 3 * * *"\njob = "a:b"\ntimezone = "Mars/Olympus"',
         "schedule 'n': unknown time zone 'Mars/Olympus'", "$.schedules[0]"),
        ('name = "n"\ncron = "0 3 * * *"\njob = "a:b"\njitter = -1',
         "Expected `float` >= 0.0", "$.schedules[0].jitter"),
        ('name = "n"\ncron = "0 3 * * *"\njob = "a:b"\nwhen = 1',
         "unknown field `when`", "$.schedules[0]"),
        ('name = "bad name"\ncron = "0 3 * * *"\njob = "a:b"',
         "Expected `str` matching regex", "$.schedules[0].name"),
        ('name = "n"\njob = "a:b"', "missing required field `cron`", "$.schedules[0]"),
        ('name = "n"\ncron = "0 3 * * *"\njob = "a:b"\n[[schedules]]\nname = "n"\n'
         'cron = "0 4 * * *"\njob = "a:b"', "'n' is not", "schedules"),
    ]
    for body, message, where in cases:
        path = write_config(tmp_path, f"[[schedules]]\n{body}\n")
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert message in str(err.value) and where in str(err.value), str(err.value)


def test_shipped_config_stays_runnable_and_its_example_schedule_loads(tmp_path):
    text = (ROOT / "config.toml").read_text()
    assert load_config(ROOT / "config.toml").schedules == []
    start = text.index("# [[schedules]]")
    example = text[start:text.index("\n\n", start)]  # the example block, to its blank line
    uncommented = "\n".join(line.removeprefix("# ") for line in example.splitlines()
                            if line.startswith("# "))
    (s,) = load_config(write_config(tmp_path, uncommented)).schedules
    assert s.job == "examples.cpu:count_primes" and s.cron == "0 3 * * *"


# -- real supervisors --------------------------------------------------------------------------

SCHEDULE = """
[[schedules]]
name = "{name}"
cron = "* * * * * *"
job = "tests.jobfuncs:add"
args = {args}
"""


def fired_jobs(broker: Broker, name: str) -> list[Job]:
    ids = sorted(i for i in enqueued(broker) if i.startswith(f"cron.{name}."))
    return [Job(i, broker) for i in ids]


def test_three_supervisors_fire_each_tick_once(sup):
    runs = [sup(workers=1, tail=SCHEDULE.format(name="shared", args="[2, 3]"))
            for _ in range(3)]
    for r in runs:
        r.wait_workers(1)
    broker = runs[0].broker
    start = len(fired_jobs(broker, "shared"))
    wait_until(lambda: len(fired_jobs(broker, "shared")) >= start + 4, timeout=15,
               what="four ticks fired with all three supervisors up")
    counts = {k: v for k, v in enqueued(broker).items() if k.startswith("cron.shared.")}
    ticks = sorted(int(k.rsplit(".", 1)[1]) for k in counts)
    assert set(counts.values()) == {1}  # every tick enqueued exactly once
    assert ticks == list(range(ticks[0], ticks[-1] + 1))  # and none missed
    assert fired_jobs(broker, "shared")[-2].result(timeout=10) == 5

    def logs() -> str:
        return "".join(r.logs() for r in runs)

    wait_until(lambda: all(job_id in logs() for job_id in counts), timeout=5,
               what="every fire in the logs")
    assert all(logs().count(f": job {job_id}") == 1 for job_id in counts)
    for r in runs:  # stop all at once: the fixture then only waits
        r.proc.send_signal(signal.SIGTERM)


def test_reload_picks_up_a_changed_schedule_and_refuses_a_bad_one(sup):
    r = sup(workers=1, tail=SCHEDULE.format(name="tick", args="[1, 1]"))
    r.wait_workers(1)

    def latest_result():
        jobs_ = fired_jobs(r.broker, "tick")
        return jobs_[-1].result(timeout=10) if jobs_ else None

    wait_until(lambda: latest_result() == 2, timeout=15, what="a tick job with result 2")
    r.config.write_text(r.text.replace("args = [1, 1]", "args = [20, 22]"))
    r.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: latest_result() == 42, timeout=15, what="the reloaded arguments")
    r.config.write_text(r.text.replace('cron = "* * * * * *"', 'cron = "* * * * * 99"'))
    r.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in r.logs(), timeout=10)
    assert "schedule 'tick': cron expression '* * * * * 99' is not valid" in r.logs()
    seen = len(fired_jobs(r.broker, "tick"))
    wait_until(lambda: len(fired_jobs(r.broker, "tick")) > seen, timeout=10,
               what="the old schedule to keep firing")
    assert latest_result() == 42


def test_cli_lists_schedules_with_next_times_and_last_run(tmp_path, server, namespace, broker):
    path = write_config(tmp_path, f"""
[redis]
url = "{server.url}"
namespace = "{namespace}"

[[schedules]]
name = "nightly"
cron = "0 3 * * *"
job = "tests.jobfuncs:add"
args = [1, 2]
timezone = "Europe/Berlin"
misfire = "run_once"
misfire_grace = 3600
""")
    config_schedule = load_config(path).schedules[0]
    schedules.add(Schedule(name="every-minute", cron="* * * * *", job="tests.jobfuncs:add",
                           args=[3, 4], queue="cron"), broker)
    clock = Clock(at("2026-05-01T00:30:00+00:00"))
    firer = Firer(broker, clock)
    firer.run([config_schedule])
    clock.now = at("2026-05-01T01:00:01+00:00")  # 03:00 in Berlin (CEST)
    (fired,) = [f for f in firer.run([config_schedule]).fired if f.schedule == "nightly"]

    def cli(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "supervisor", "--config", str(path),
                              "schedules", *args], capture_output=True, text=True,
                             timeout=30, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        return out.stdout

    text = cli()
    assert "nightly  [config]" in text and "every-minute  [api]" in text
    assert "cron      0 3 * * *  (Europe/Berlin, misfire run_once within 3600s" in text
    assert "job       tests.jobfuncs:add(1, 2) -> queue default, priority 10" in text
    assert f"last run  {fired.job_id} at 2026-05-01T03:00:00+02:00: queued (fired by" in text
    rows = {r["name"]: r for r in json.loads(cli("--json", "--next", "2"))}
    assert rows["nightly"]["last"]["state"] == "queued"
    assert rows["every-minute"]["source"] == "api"
    assert rows["every-minute"]["last"]["job_id"] == f"cron.every-minute.{int(clock.now) - 1}"
    for r in rows.values():
        assert len(r["next"]) == 2 and all(datetime.fromisoformat(t).second == 0
                                           for t in r["next"])
    assert rows["nightly"]["next"][0].endswith("T03:00:00+02:00") or \
        rows["nightly"]["next"][0].endswith("T03:00:00+01:00")
