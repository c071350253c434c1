"""Pure logic: autoscaling rules, exit descriptions, config validation, slots."""

import os
import signal

import msgspec
import pytest

from supervisor.config import Config, SupervisorSettings, load_config
from supervisor.errors import ConfigError
from supervisor.runtime.reasons import describe_exit
from supervisor.runtime.scaling import POOL_MAX, Machine, autoscale_step, derived_limit, pool_limit
from supervisor.runtime.slots import ChildState, Slots


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((2, 1, 4, 5, [], 60), 3),        # backlog and nobody idle: grow
        ((4, 1, 4, 5, [], 60), 4),        # already at max
        ((2, 1, 4, 5, [0.5], 60), 2),     # backlog but someone idle: wait
        ((3, 1, 4, 0, [61.0], 60), 2),    # idle past the timeout: shrink
        ((1, 1, 4, 0, [600.0], 60), 1),   # never below min
        ((3, 1, 4, 0, [59.0], 60), 3),    # idle, but not long enough
        ((0, 1, 4, 0, [], 60), 1),        # below min: back to min
        ((9, 1, 4, 0, [], 60), 4),        # above max: back to max
    ],
)
def test_autoscale_step(args, expected):
    target, why = autoscale_step(*args)
    assert target == expected
    assert (why == "") == (target == args[0])


def test_describe_exit():
    assert describe_exit(3 << 8, by_us=False) == "exited with code 3"
    assert describe_exit(signal.SIGSEGV, by_us=False) == "was killed by SIGSEGV"
    assert "possibly OOM-killed" in describe_exit(signal.SIGKILL, by_us=False)
    assert describe_exit(signal.SIGKILL, by_us=True) == "was killed by SIGKILL"


def test_slots_roundtrip():
    s = Slots(3)
    s.write(2, ChildState.BUSY, 42, 7, job_id="j" * 200, queue="q", token="t", function="m:f",
            attempt=2, started=1.0, deadline=3.0)
    v = s.read(2)
    assert (v.state, v.pid, v.jobs_done, v.job_id, v.attempt, v.deadline) == (
        ChildState.BUSY, 42, 7, "j" * 128, 2, 3.0)
    before = v.heartbeat
    s.beat(2)
    assert s.read(2).heartbeat >= before and s.read(2).job_id == "j" * 128
    s.clear(2)
    assert s.read(2).state is ChildState.EMPTY


def test_default_config_and_shipped_file_agree():
    shipped = load_config("config.toml")
    assert shipped == Config()
    assert shipped.pool_size() == (os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[supervisor]\nworkers = 5000\n", "<= 1024 - at `$.supervisor.workers`"),
        ("[supervisor]\nworkers = 'two'\n", "Expected `int`"),
        ("[supervisor]\nbogus = 1\n", "unknown field `bogus`"),
        ("[worker]\nqueues = []\n", "`$.worker.queues` is empty: list the queues"),
        ("[worker]\nqueues = ['a', 'b']\nweights = [1]\n", "one number per queue"),
        ("[supervisor]\nmin_workers = 4\nmax_workers = 2\n", "must not exceed"),
        ("[supervisor]\nmin_workers = 4\n",
         "min_workers (4) must not exceed max_workers (0): raise supervisor.max_workers"),
        ("[supervisor]\nworkers = 12\nmax_workers = 8\n",
         "workers (12) must not exceed max_workers (8): raise supervisor.max_workers"),
        ("[redis]\npassword = 'x'\n", "not allowed in config.toml"),
        ("[defaults]\nmax_attempts = 0\n", ">= 1 - at `$.defaults.max_attempts`"),
        ("[metrics]\naddress = 'nonsense'\n", "$.metrics.address"),
        ("[health]\nmax_lag = -1\n", ">= 0.0 - at `$.health.max_lag`"),
        ("[health]\nredis_timeout = 0\n", "> 0.0 - at `$.health.redis_timeout`"),
        ("[health]\nmax_dead = 100000\n",
         "health.max_dead (100000) must be below defaults.max_dead (100000)"),
        ("not toml = = \n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)


GiB = 2**30


@pytest.mark.parametrize(
    ("cores", "memory", "expected"),
    [
        (2, 24 * GiB, 8),            # 4 per core
        (64, 4 * GiB, 16),           # 256 MiB per worker
        (1, 100 * 2**20, 1),         # never below one
        (512, 1024 * GiB, POOL_MAX),  # never above the hard limit
    ],
)
def test_derived_max_workers(cores, memory, expected):
    limit = derived_limit(Machine(cores=cores, memory=memory, memory_from="cgroup limit"))
    assert limit.workers == expected and not limit.configured
    assert limit.origin.startswith(f"derived from {cores} cores x 4 = {4 * cores} and ")
    assert f"GiB cgroup limit / 256 MiB per worker = {memory // 2**28}" in limit.origin


def test_a_configured_max_workers_is_the_limit():
    limit = pool_limit(SupervisorSettings(max_workers=40), Machine(cores=1, memory=GiB))
    assert (limit.workers, limit.configured) == (40, True)
    assert limit.describe() == "at most 40 workers (supervisor.max_workers)"


def test_workers_above_the_derived_max_is_a_config_error():
    assert pool_limit(SupervisorSettings(workers=8), Machine(cores=2, memory=24 * GiB))
    with pytest.raises(ConfigError) as info:
        pool_limit(SupervisorSettings(workers=9), Machine(cores=2, memory=24 * GiB))
    assert str(info.value).startswith(
        "supervisor.workers = 9 is above the 8 workers this host allows (derived from 2 cores")
    assert "set supervisor.max_workers (up to 1024) to allow more" in str(info.value)


def test_the_default_pool_stays_within_the_max():
    assert Config().pool_size(limit=1) == 1
    autoscaled = SupervisorSettings(workers=12, min_workers=1, max_workers=8)  # workers unused
    assert Config(supervisor=autoscaled).pool_size(limit=8) == 1


def test_environment_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBVISOR_SUPERVISOR_WORKERS", "3")
    monkeypatch.setenv("JOBVISOR_REDIS_NAMESPACE", "envns")
    monkeypatch.setenv("JOBVISOR_WORKER_QUEUES", '["a", "b"]')
    c = load_config(None)
    assert (c.supervisor.workers, c.redis.namespace, c.worker.queues) == (3, "envns", ["a", "b"])
    monkeypatch.setenv("JOBVISOR_SUPERVISOR_WORKERS", "-1")
    with pytest.raises(ConfigError, match="supervisor.workers"):
        load_config(None)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://app:hunter2@db:6379/0", "app:***@db:6379"),
    ("redis://db:6379/0?password=hunter2", "db:6379/0?password=***"),
    ("rediss://db:6380/0?ssl_password=hunter2&db=1", "?ssl_password=***&db=1"),
])
def test_log_lines_redact_passwords(url, shown):
    import logging
    import sys

    from supervisor.integrations.logs import JsonFormatter, TextFormatter

    record = logging.LogRecord("x", logging.WARNING, __file__, 1,
                               f"cannot reach {url} now", None, None)
    try:
        raise ConnectionError(f"while talking to {url}")
    except ConnectionError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None,
                                   sys.exc_info())
    for formatter in (TextFormatter(), JsonFormatter()):
        for r in (record, failed):
            line = formatter.format(r)
            assert "hunter2" not in line and shown in line


def test_describe_exit_of_an_unnamed_signal():
    assert describe_exit(40, by_us=False) == "was killed by signal 40"


def test_refused_reload_restores_the_registry(tmp_path, monkeypatch):
    from jobs.registry import registered
    from supervisor.errors import HaltServer
    from supervisor.runtime.preload import preload

    (tmp_path / "rl_good.py").write_text(
        "from jobs import job\n\n@job\ndef fresh() -> int:\n    return 1\n")
    (tmp_path / "rl_bad.py").write_text("raise RuntimeError('broken module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = registered()
    with pytest.raises(HaltServer, match="broken module"):
        preload(["rl_good", "rl_bad"], reload=True)
    assert registered() == before and "rl_good:fresh" not in registered()


@pytest.mark.parametrize("argv", [["run", "--log-level", "loud"], ["top", "--interval", "-1"]])
def test_cli_rejects_bad_arguments_cleanly(argv, capsys):
    from supervisor.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err or "must be between" in err


def test_scripts_carry_only_the_helpers_they_use():
    from jobs.store.scripts import source, used_helpers

    lib = "local A = 1\n-- b's comment\nlocal function b() return A end\nlocal function c() end\n"
    assert used_helpers(lib, "return b()") == ["local A = 1\n-- b's comment\n",
                                               "local function b() return A end\n"]
    assert used_helpers(lib, "return 1") == []
    assert "local function after_final" not in source("renew")
    assert "local function after_final" in source("finish_claim")


def test_a_new_workers_first_counts_are_due_at_once():
    """A worker that never wrote its counts writes them before its next job, which may
    be killed and take them along."""
    from jobs.tally import Tally

    tally = Tally()
    assert not tally.due()  # nothing counted
    tally.completed("default", "tests.jobfuncs:add", 0.001)
    assert tally.due()


def _pos(a: int, b: str = "x", /) -> None: ...
def _mixed(a: int, b: float = 1.0, c: list[int] | None = None) -> None: ...
def _plain(a, b, c=3) -> None: ...
def _kwonly(a: int, *, b: int = 2) -> None: ...
def _star(*args: int) -> None: ...
def _none() -> None: ...


def test_binding_by_position_answers_as_signature_bind():
    """The per-job shortcut for positional calls gives what Signature.bind gives:
    the same arguments, the same conversions, the same refusals."""
    from jobs.decorator import ArgumentBinder

    cases = [(_pos, [1], {}), (_pos, ["2", "y"], {}), (_pos, [], {}), (_pos, [1, "y", 3], {}),
             (_mixed, [1], {}), (_mixed, ["1", "2.5", ["3"]], {}), (_mixed, ["x"], {}),
             (_mixed, [1], {"c": [1]}), (_mixed, [1, 2, 3, 4], {}),
             (_plain, [1, 2], {}), (_plain, [1], {}), (_plain, [1, 2, 3, 4], {}),
             (_kwonly, [1], {}), (_kwonly, [1], {"b": "3"}), (_star, [1, "2"], {}),
             (_none, [], {}), (_none, [1], {})]
    for func, args, kwargs in cases:
        fast, slow = ArgumentBinder(func), ArgumentBinder(func)
        slow._by_position = None
        answers = []
        for binder in (fast, slow):
            try:
                answers.append(binder.bind(list(args), dict(kwargs)))
            except (TypeError, msgspec.ValidationError) as exc:
                answers.append((type(exc), str(exc)))
        assert answers[0] == answers[1], (func.__name__, args, kwargs)
    assert ArgumentBinder(_mixed)._by_position is not None  # the shortcut was taken
    assert ArgumentBinder(_kwonly)._by_position is None


def test_job_ids_are_80_random_bits_in_lower_case_base32(monkeypatch):
    import base64

    from jobs import options

    for raw in (bytes(range(10)), b"\xff" * 10, b"\x00" * 10, b"\x80" + b"\x01" * 9,
                *(os.urandom(10) for _ in range(500))):
        monkeypatch.setattr(options.secrets, "token_bytes", lambda n, raw=raw: raw)
        assert options.new_job_id() == base64.b32encode(raw).decode().lower()


def test_each_script_lists_the_parts_it_uses_and_only_those():
    """A script reaches a shared operation only through a part it lists (composing it
    fails otherwise), and a part it lists is one it uses."""
    from importlib import resources

    from jobs.store.layouts import PARTS, SCRIPTS
    from jobs.store.scripts import _definitions, source

    lua = resources.files("jobs.store") / "lua"
    for name, layout in SCRIPTS.items():
        text = source(name)
        for part in layout.parts:
            defined = _definitions((lua / f"_{part}.lua").read_text())
            assert any(f"local function {d}(" in text for d in defined), (name, part)
    assert set(PARTS) == {p.name[1:-4] for p in lua.iterdir()
                          if p.name.startswith("_") and p.name != "_lib.lua"}
    assert set(SCRIPTS) == {p.name[:-4] for p in lua.iterdir() if not p.name.startswith("_")}


def test_the_policy_of_a_job_with_no_options_follows_its_function_and_defaults():
    """A job that sets no option of its own takes its function's and the defaults'; the
    answer is kept per function, and must change when either does."""
    import msgspec as ms

    from jobs.decorator import JobFunction, JobOptions
    from jobs.policy import resolve
    from jobs.records import JobSpec
    from jobs.settings import JobDefaults

    def work() -> None: ...

    fn = JobFunction(work, JobOptions(timeout=5.0))
    plain, defaults = JobSpec(function=fn.name), JobDefaults()
    assert resolve(plain, fn, defaults).timeout == 5.0
    assert resolve(plain, fn, defaults) is resolve(plain, fn, defaults)  # kept
    fn.job_options = ms.structs.replace(fn.job_options, timeout=7.0, max_attempts=2)
    assert (resolve(plain, fn, defaults).timeout, resolve(plain, fn, defaults).max_attempts) \
        == (7.0, 2)
    assert resolve(plain, fn, JobDefaults(result_ttl=11.0)).result_ttl == 11.0
    # A job with an option of its own is resolved for itself.
    assert resolve(JobSpec(function=fn.name, timeout=1.5), fn, defaults).timeout == 1.5
