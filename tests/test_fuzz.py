"""Fuzzing the public API and the command line: only clear, typed errors come out."""

from __future__ import annotations

import io
import json
import string
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs import Job, JobsError, Queue, batch, chain
from jobs.limits import set_limit
from jobs.options import EnqueueOptions
from tests import jobfuncs

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# What a caller may get from a bad call: the library's errors, or TypeError for an
# argument of a type that cannot be stored. Anything else is a bug.
CLEAR = (JobsError, TypeError)

scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
           | st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
anything = (values | st.builds(object) | st.sets(st.integers(), max_size=2)
            | st.datetimes() | st.datetimes(timezones=st.just(UTC)) | st.timedeltas()
            | st.complex_numbers())
option_values = {name: anything | st.text(alphabet=string.printable, max_size=140)
                 for name in EnqueueOptions.__struct_fields__}


def _clear(exc: BaseException) -> None:
    assert isinstance(exc, CLEAR), f"{type(exc).__name__}: {exc}"
    assert str(exc).strip(), f"{type(exc).__name__} without a message"


@FUZZ
@given(args=st.lists(anything, max_size=3),
       kwargs=st.dictionaries(st.text(max_size=8), anything, max_size=2),
       opts=st.fixed_dictionaries({}, optional=option_values),
       target=st.sampled_from(["tests.jobfuncs:untyped", "tests.jobfuncs:add", "x:y"])
       | st.text(max_size=30))
def test_enqueue_gives_clear_errors(broker, args, kwargs, opts, target):
    try:
        job = Queue("default", broker).options(**opts).enqueue(target, *args, **kwargs)
    except BaseException as exc:  # the point: see what comes out
        _clear(exc)
    else:
        assert Job.fetch(job.id, broker).id == job.id


@FUZZ
@given(name=st.text(max_size=140), job_id=st.text(max_size=140),
       rate=anything | st.text(max_size=12), most=anything)
def test_queues_jobs_and_limits_give_clear_errors(broker, name, job_id, rate, most):
    for call in (lambda: Queue(name, broker).counts(),
                 lambda: Queue(name, broker).enqueue(jobfuncs.add, 1, 1),
                 lambda: Job.fetch(job_id, broker),
                 lambda: Job(job_id, broker).cancel(),
                 lambda: Queue("default", broker).requeue_dead(job_id),
                 lambda: set_limit(queue=name, rate_limit=rate, max_concurrency=most,
                                   broker=broker),
                 lambda: set_limit(name, rate_limit=rate, burst=most, broker=broker)):
        try:
            call()
        except BaseException as exc:
            _clear(exc)


@FUZZ
@given(items=st.lists(st.sampled_from([jobfuncs.add.call(1, 2), jobfuncs.add]) | anything,
                      max_size=3),
       hook=anything | st.text(max_size=20), flag=anything)
def test_chains_and_batches_give_clear_errors(broker, items, hook, flag):
    for call in (lambda: chain(*items, pass_results=flag).enqueue(broker),
                 lambda: batch(items, on_success=hook, name=hook).enqueue(broker)):
        try:
            call()
        except BaseException as exc:
            _clear(exc)


COMMANDS = ["enqueue", "show", "result", "wait", "cancel", "stats", "hosts", "workers",
            "dead", "pause", "resume", "scale", "reload", "schedules"]
tokens = (st.sampled_from(["--json", "--queue", "--priority", "--delay", "--timeout",
                           "--reason", "--host", "--limit", "--next", "list", "show",
                           "requeue", "purge", "-1", "0", "1e9", "nan", "default",
                           "tests.jobfuncs:add", "[1, 2]", "{}", "--", "-x"])
          | st.text(max_size=12))


@FUZZ
@given(command=st.sampled_from(COMMANDS), rest=st.lists(tokens, max_size=5))
def test_command_line_gives_clear_errors(broker, tmp_path_factory, monkeypatch, command, rest):
    data = tmp_path_factory.mktemp("cli")
    monkeypatch.setenv("JOBVISOR_REDIS_URL", broker.url)
    monkeypatch.setenv("JOBVISOR_REDIS_NAMESPACE", broker.keys.ns)
    monkeypatch.setenv("JOBVISOR_SUPERVISOR_DATA_DIR", str(data))  # no pid file: no signal
    monkeypatch.setenv("JOBVISOR_CONFIG", str(data / "none.toml"))
    (data / "none.toml").write_text("")
    from supervisor.cli.main import main

    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        try:
            main([command, *rest])
        except SystemExit as exc:
            code = exc.code
        else:
            code = 0
    assert isinstance(code, int) and 0 <= code < 128, code
    assert "Traceback" not in err.getvalue(), err.getvalue()
    if code:
        assert err.getvalue().strip(), f"exit {code} without a message"


def test_at_and_delay_edges(broker):
    q = Queue("default", broker)
    assert q.options(at=datetime(1970, 1, 1, tzinfo=UTC)).enqueue(jobfuncs.add, 1, 1).id
    assert q.options(delay=timedelta(0)).enqueue(jobfuncs.add, 1, 1).id


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if value == value and abs(value) != float("inf") else (
            "nan" if value != value else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value)
    assert isinstance(value, list)
    return "[" + ", ".join(_toml(v) for v in value) + "]"


def _config_keys() -> dict[str, list[str]]:
    from supervisor.config import Config

    """Every table section of the config with its keys (and one unknown key)."""
    tables = {s: getattr(Config(), s) for s in Config.__struct_fields__}
    return {s: [*t.__struct_fields__, "bogus"] for s, t in tables.items()
            if hasattr(t, "__struct_fields__")}


toml_scalars = (st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.floats()
                | st.booleans() | st.text(max_size=12))
toml_values = toml_scalars | st.lists(toml_scalars, max_size=3)


@FUZZ
@given(data=st.data())
def test_hostile_config_is_refused_with_the_key(tmp_path_factory, data):
    from supervisor.config import load_config
    from supervisor.errors import ConfigError

    keys = _config_keys()
    section = data.draw(st.sampled_from(sorted(keys)))
    chosen = data.draw(st.dictionaries(st.sampled_from(keys[section]), toml_values,
                                       min_size=1, max_size=3))
    text = f"[{section}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in chosen.items())
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert f"$.{section}" in message or "not valid TOML" in message \
            or "not allowed" in message, message
    except BaseException as exc:
        raise AssertionError(f"{type(exc).__name__} for\n{text}: {exc}") from exc
