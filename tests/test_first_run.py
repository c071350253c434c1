"""What a new user's first run tripped over: each test states what users expect."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobs import Broker, Job, JobState, Queue, RedisSettings
from jobs.errors import ConfigurationError
from supervisor.cli.main import parser
from supervisor.config import load_config
from supervisor.errors import ConfigError
from tests.helpers import wait_until
from tests.procs import start_and_wait

ROOT = Path(__file__).parent.parent


def jobvisor(*args: str, env: dict[str, str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


def config_file(tmp_path: Path, url: str, namespace: str, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[redis]\nurl = "{url}"\nnamespace = "{namespace}"\n{extra}\n'
                    f'[supervisor]\ndata_dir = "{tmp_path / "var"}"\n')
    return path


@pytest.fixture
def r(sup):
    return start_and_wait(sup)


def cli(r, *args: str) -> subprocess.CompletedProcess[str]:
    return jobvisor(*args, "--config", str(r.config))  # the global option after the command


# -- 3. global options before or after the command ------------------------------------


def test_config_is_taken_after_the_command_and_listed_in_every_help(tmp_path, server,
                                                                    namespace):
    path = config_file(tmp_path, server.url, namespace)
    after = jobvisor("stats", "--json", "--config", str(path))
    before = jobvisor("--config", str(path), "stats", "--json")
    assert after.returncode == 0 and before.returncode == 0, after.stderr + before.stderr
    assert json.loads(after.stdout) == json.loads(before.stdout) == []
    commands = parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in commands.items():
        assert "--config" in sub.format_help(), name


def test_every_option_and_argument_has_help_text():
    commands = parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    missing = [f"{name} {action.dest}" for name, sub in commands.items()
               for action in sub._actions if not action.help]
    assert missing == []


def test_bad_numbers_are_refused_by_the_parser():
    demo = jobvisor("demo", "--jobs", "-3")
    assert demo.returncode == 2 and "must be at least 1, not -3" in demo.stderr
    dead = jobvisor("dead", "list", "--limit", "0")
    assert dead.returncode == 2 and "must be at least 1" in dead.stderr


# -- 5. one truth for a job's effective options ----------------------------------------


def test_max_attempts_is_the_functions_in_show_wait_and_dead_list(r):
    job_id = cli(r, "enqueue", "tests.jobfuncs:spin_then_fail", "0.01").stdout.strip()
    waited = cli(r, "wait", job_id, "--json")
    assert waited.returncode == 10
    shown = json.loads(cli(r, "show", job_id, "--json").stdout)
    dead = [d for d in json.loads(cli(r, "dead", "list", "--json").stdout) if d["id"] == job_id]
    assert [json.loads(waited.stdout)["max_attempts"], shown["max_attempts"],
            dead[0]["max_attempts"]] == [1, 1, 1]
    assert "attempts      1 of 1" in cli(r, "show", job_id).stdout
    # A per-enqueue option wins over the function's.
    own = cli(r, "enqueue", "tests.jobfuncs:add", "1", "2", "--max-attempts", "7",
              "--delay", "600").stdout.strip()
    assert json.loads(cli(r, "show", own, "--json").stdout)["max_attempts"] == 7


# -- 6. the timeout bounds a command against a server that never answers ----------------


@contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_a_server_that_never_answers_is_given_up_on_after_the_timeout(tmp_path, namespace):
    with silent_server() as port:
        path = config_file(tmp_path, f"redis://127.0.0.1:{port}", namespace,
                           "socket_timeout = 3.0\nconnect_timeout = 3.0")
        started = time.monotonic()
        out = jobvisor("stats", "--config", str(path))
        took = time.monotonic() - started
    assert out.returncode == 4, out.stderr
    assert "Timeout" in out.stderr and "(gave up after 3." in out.stderr
    assert took < 10  # one try of 3 s (and the interpreter's start), not four


# -- 7. environment errors name the variable ------------------------------------------


def test_an_environment_override_error_names_the_variable(monkeypatch):
    monkeypatch.setenv("JOBVISOR_SUPERVISOR_WORKERS", "abc")
    with pytest.raises(ConfigError) as bad_value:
        load_config(None)
    assert "environment variable JOBVISOR_SUPERVISOR_WORKERS='abc'" in str(bad_value.value)
    assert "config.toml" not in str(bad_value.value)
    monkeypatch.delenv("JOBVISOR_SUPERVISOR_WORKERS")
    monkeypatch.setenv("JOBVISOR_SUPERVISOR_WORKRS", "3")
    with pytest.raises(ConfigError) as unknown:
        load_config(None)
    assert "environment variable JOBVISOR_SUPERVISOR_WORKRS" in str(unknown.value)
    assert "did you mean JOBVISOR_SUPERVISOR_WORKERS?" in str(unknown.value)


# -- 8. a function no worker can import is refused at enqueue -------------------------


def test_a_job_defined_in_the_main_script_is_refused_at_enqueue(server, namespace):
    script = f"""
from jobs import job, connect, RedisSettings
from jobs.errors import ConfigurationError
connect({server.url!r}, redis_settings=RedisSettings(namespace={namespace!r}))

@job
def hello() -> str:
    return "hi"

try:
    hello.enqueue()
except ConfigurationError as exc:
    print("refused:", exc)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=30, cwd=ROOT)
    assert "refused: job '__main__:hello' is defined in the script being run" in out.stdout, \
        out.stderr
    with pytest.raises(ConfigurationError, match="no worker can import"):
        Queue("default", Broker(server.url, redis_settings=RedisSettings(
            namespace=namespace))).enqueue("__main__:hello")


# -- 9, 10, 11. bad input and not-found exit non-zero with a message --------------------


def test_bad_input_and_not_found_exit_non_zero(r):
    nan = cli(r, "enqueue", "tests.jobfuncs:add", "NaN", "1")
    assert nan.returncode == 1 and "argument 1 'NaN' is not a JSON value" in nan.stderr
    word = cli(r, "enqueue", "tests.jobfuncs:add", "2", "k1")
    assert word.returncode == 1 and "argument 2 'k1'" in word.stderr
    assert """quote it for JSON inside shell quotes: '"k1"'""" in word.stderr
    missing = cli(r, "dead", "requeue", "nonexistent")
    assert missing.returncode == 1 and "no job 'nonexistent'" in missing.stderr
    done = cli(r, "enqueue", "tests.jobfuncs:add", "1", "1").stdout.strip()
    assert cli(r, "wait", done).returncode == 0
    not_dead = cli(r, "dead", "purge", done)
    assert not_dead.returncode == 1 and "is completed, not dead" in not_dead.stderr
    unknown = cli(r, "pause", "defualt")
    assert unknown.returncode == 1 and "does not exist" in unknown.stderr
    assert "did you mean 'default'?" in unknown.stderr and "--new" in unknown.stderr
    on_purpose = cli(r, "pause", "later", "--new")
    assert on_purpose.returncode == 0 and "a new queue" in on_purpose.stdout
    assert cli(r, "resume", "later").returncode == 0
    again = cli(r, "resume", "later")
    assert again.returncode == 1 and "is not paused" in again.stderr


def test_wait_timeout_says_what_the_job_is_still_doing(r):
    later = cli(r, "enqueue", "tests.jobfuncs:add", "1", "1", "--delay", "600").stdout.strip()
    out = cli(r, "wait", later, "--timeout", "0.2")
    assert out.returncode == 12 and out.stdout.strip() == "still scheduled after 0.2 s"


# -- 13. a server that is not Redis, and tidy messages --------------------------------


@contextmanager
def web_server() -> Iterator[int]:
    """A TCP server answering every connection with an HTML page, as a web server would."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(0.2)
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                with conn:
                    conn.settimeout(2)
                    try:
                        conn.recv(4096)
                        conn.sendall(b"<html><body>hello</body></html>\r\n")
                    except OSError:
                        pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield listener.getsockname()[1]
        finally:
            stop.set()
            thread.join(5)


def test_a_server_that_is_not_redis_is_named_as_such(tmp_path, namespace):
    with web_server() as port:
        out = jobvisor("stats", "--config",
                       str(config_file(tmp_path, f"redis://127.0.0.1:{port}", namespace)))
    assert out.returncode == 4, out.stderr
    assert "not a Redis/Valkey server" in out.stderr and ".;" not in out.stderr


def test_a_refused_connection_message_has_no_stray_punctuation(tmp_path, namespace):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        out = jobvisor("stats", "--config",
                       str(config_file(tmp_path, f"redis://127.0.0.1:{port}", namespace)))
    assert out.returncode == 4 and "cannot reach Redis" in out.stderr
    assert ".;" not in out.stderr


# -- 14. times with their offset, and a readable repr -----------------------------------


def test_times_carry_their_offset_and_repr_is_readable(broker):
    j = Queue("default", broker).enqueue("tests.jobfuncs:add", 1, 2)
    assert repr(j) == f"<Job {j.id}>"
    assert j.enqueued_at is not None and j.enqueued_at.tzinfo is UTC
    assert abs((datetime.now(UTC) - j.enqueued_at).total_seconds()) < 60
    assert repr(j) == f"<Job {j.id} queued tests.jobfuncs:add>"


def test_cli_times_are_iso_8601_with_an_offset(r):
    job_id = cli(r, "enqueue", "tests.jobfuncs:add", "1", "1").stdout.strip()
    waited = json.loads(cli(r, "wait", job_id, "--json").stdout)
    for key in ("enqueued_at", "started_at", "finished_at"):
        assert datetime.fromisoformat(waited[key]).utcoffset() is not None, key
    text = cli(r, "show", job_id).stdout
    line = next(x for x in text.splitlines() if x.startswith("finished_at"))
    assert datetime.fromisoformat(line.split()[1]).utcoffset() is not None
    hosts = json.loads(cli(r, "hosts", "--json").stdout)
    assert datetime.fromisoformat(hosts[0]["started"]).utcoffset() is not None


# -- 15. producer and supervisor agree on where jobs go, or are told --------------------


def test_the_library_takes_the_supervisors_config_and_environment(tmp_path, server,
                                                                  namespace):
    path = config_file(tmp_path, server.url, namespace)
    script = ("from jobs import Queue\n"
              "print(Queue('default').enqueue('tests.jobfuncs:add', 1, 2).id)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=30, cwd=ROOT, env={**os.environ, "JOBVISOR_CONFIG": str(path)})
    assert out.returncode == 0, out.stderr
    mine = Broker(server.url, redis_settings=RedisSettings(namespace=namespace))
    assert Job.fetch(out.stdout.strip(), mine).state is JobState.QUEUED
    env = {**os.environ, "JOBVISOR_REDIS_URL": server.url,
           "JOBVISOR_REDIS_NAMESPACE": namespace}
    env.pop("JOBVISOR_CONFIG", None)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=30, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert Job.fetch(out.stdout.strip(), mine).state is JobState.QUEUED


def test_views_say_when_no_live_supervisor_serves_a_queue(r):
    stray = Queue("nobody-serves-this", r.broker).enqueue("tests.jobfuncs:add", 1, 2)
    served = Queue("default", r.broker).options(delay=600).enqueue("tests.jobfuncs:add", 1, 2)
    stats = cli(r, "stats")
    assert "no live supervisor in namespace" in stats.stderr
    assert "'nobody-serves-this'" in stats.stderr and "'default'" not in stats.stderr
    assert "no live supervisor" in cli(r, "show", stray.id).stderr
    assert "no live supervisor" not in cli(r, "show", served.id).stderr
    waited = cli(r, "wait", stray.id, "--timeout", "0.1")
    assert waited.returncode == 12 and "no live supervisor" in waited.stderr
    rows = {row["queue"]: row["served"] for row in json.loads(cli(r, "stats", "--json").stdout)}
    assert rows == {"default": True, "nobody-serves-this": False}
    wait_until(lambda: True)


# -- 12. counters add up when workers die ----------------------------------------------


def test_counts_a_crashing_worker_had_not_written_are_written_by_its_supervisor(sup):
    from jobs.stats import queue_stats

    r = start_and_wait(sup, workers=1)
    q = Queue("default", r.broker)
    adds = [q.enqueue("tests.jobfuncs:add", i, i) for i in range(10)]
    crash = q.options(max_attempts=1).enqueue("examples.cpu:crash")
    assert [j.result(timeout=20) for j in adds] == [2 * i for i in range(10)]
    wait_until(lambda: crash.refresh().state is JobState.DEAD, timeout=20, what="the crash")

    def completed() -> int:
        return queue_stats(r.broker)[0].last_minute["completed"]

    wait_until(lambda: completed() >= 10, timeout=10, what="10 completions counted")
    assert completed() == 10  # each once: none lost with the worker, none written twice
