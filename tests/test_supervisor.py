"""The supervisor as a real subprocess, driven by real signals, observed via Redis and psutil."""

from __future__ import annotations

import os
import signal

from jobs import ErrorKind, Job, JobState, Queue
from tests.helpers import wait_until
from tests.procs import start_and_wait as _start


def test_runs_jobs_and_stops_cleanly(sup):
    r = _start(sup)
    q = Queue("default", r.broker)
    jobs_ = [q.enqueue("examples.cpu:count_primes", 10_000 + i) for i in range(20)]
    assert jobs_[0].result(timeout=20) == 1229
    for j in jobs_:
        j.result(timeout=20)
    assert r.stop() == 0
    assert "supervisor" in r.logs() and "stopped" in r.logs()
    assert r.broker.client.keys(r.broker.keys.supervisors_pattern()) == []


def test_hard_timeout_kills_and_replaces(sup):
    r = _start(sup)
    before = {p.pid for p in r.wait_workers(2)}
    j = Queue("default", r.broker).enqueue("examples.cpu:runaway")
    wait_until(lambda: j.refresh().state is JobState.DEAD, timeout=15)
    e = j.error
    assert e.kind is ErrorKind.TIMEOUT and e.message == "hard timeout after 1 s"
    assert 1.0 <= e.duration < 2.0
    after = {p.pid for p in r.wait_workers(2)}
    assert len(before - after) == 1
    assert Queue("default", r.broker).enqueue("tests.jobfuncs:add", 1, 2).result(timeout=10) == 3


def test_crash_is_accounted_and_retried(sup):
    r = _start(sup)
    j = Queue("default", r.broker).enqueue("examples.cpu:crash")
    wait_until(lambda: j.refresh().state is JobState.DEAD, timeout=15)
    assert [e.kind for e in j.errors] == [ErrorKind.CRASH, ErrorKind.CRASH]
    assert "exited with code 70" in j.errors[0].message
    r.wait_workers(2)


def test_outside_sigkill_reported_as_possible_oom(sup):
    r = _start(sup)
    j = Queue("default", r.broker).options(max_attempts=1).enqueue("examples.cpu:spin", 30)
    wait_until(lambda: j.refresh().state is JobState.ACTIVE, timeout=10)
    busy = wait_until(lambda: [p for p in r.children() if "busy" in " ".join(p.cmdline())],
                      timeout=10)
    os.kill(busy[0].pid, signal.SIGKILL)
    wait_until(lambda: j.refresh().state is JobState.DEAD, timeout=10)
    assert "possibly OOM-killed" in j.error.message


def test_graceful_stop_lets_running_job_finish(sup):
    r = _start(sup)
    j = Queue("default", r.broker).enqueue("examples.cpu:spin", 1.5)
    # Running, not only claimed: a claim still on its way back to an idle worker when
    # the stop comes is given back instead (released, no attempt spent).
    wait_until(lambda: [p for p in r.workers() if j.id in " ".join(p.cmdline())],
               timeout=10, what="a worker running the job")
    assert r.stop() == 0
    assert j.refresh().state is JobState.COMPLETED


def test_graceful_timeout_releases_job_without_spending_attempt(sup):
    r = _start(sup, graceful=0.5)
    j = Queue("default", r.broker).enqueue("examples.cpu:spin", 20)
    wait_until(lambda: j.refresh().state is JobState.ACTIVE, timeout=10)
    assert r.stop() == 0
    assert j.refresh().state is JobState.QUEUED and j.attempts == 0


def test_sighup_with_broken_config_keeps_running(sup):
    r = _start(sup)
    r.config.write_text("[supervisor]\nworkers = 'many'\n")
    r.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in r.logs(), timeout=10)
    assert "Expected `int`" in r.logs() and "supervisor.workers" in r.logs()
    assert r.proc.poll() is None
    assert Queue("default", r.broker).enqueue("tests.jobfuncs:add", 2, 2).result(timeout=10) == 4


def test_sighup_rolls_children_and_applies_new_count(sup):
    r = _start(sup)
    old = {p.pid for p in r.wait_workers(2)}
    r.config.write_text(r.text.replace("workers = 2", "workers = 3"))
    r.proc.send_signal(signal.SIGHUP)
    new = wait_until(lambda: {p.pid for p in r.children()} if len(r.children()) == 3
                     and not ({p.pid for p in r.children()} & old) else None, timeout=20)
    assert len(new) == 3
    assert Queue("default", r.broker).enqueue("tests.jobfuncs:add", 1, 1).result(timeout=10) == 2


def test_ttin_ttou_scale(sup):
    r = _start(sup)
    r.proc.send_signal(signal.SIGTTIN)
    r.wait_workers(3)
    r.proc.send_signal(signal.SIGTTOU)
    r.wait_workers(2)  # signals of one kind coalesce while pending: send the next after
    r.proc.send_signal(signal.SIGTTOU)
    r.wait_workers(1)
    assert "SIGTTOU: 1 workers wanted" in r.logs()


def test_boot_failure_halts_with_clear_error(sup):
    r = sup(modules='["no_such_module_xyz"]')
    assert r.proc.wait(20) == 3
    assert "cannot import job module 'no_such_module_xyz'" in r.logs()


def test_fast_stop_releases_jobs(sup):
    r = _start(sup)
    j = Queue("default", r.broker).enqueue("examples.cpu:spin", 20)
    wait_until(lambda: j.refresh().state is JobState.ACTIVE, timeout=10)
    r.proc.send_signal(signal.SIGQUIT)
    assert r.proc.wait(20) == 0
    assert j.refresh().state is JobState.QUEUED


def test_killed_supervisor_jobs_are_reclaimed_by_another(sup):
    a = _start(sup, lease=1.0)
    j = Queue("default", a.broker).options(max_attempts=3).enqueue("examples.cpu:spin", 0.5)
    wait_until(lambda: j.refresh().state is JobState.ACTIVE, timeout=10)
    for p in a.children():
        p.kill()
    a.proc.kill()
    a.proc.wait()
    b = _start(sup, lease=1.0)
    wait_until(lambda: j.refresh().state is JobState.COMPLETED, timeout=20)
    assert j.errors[0].kind is ErrorKind.LOST
    assert j.attempts == 2
    b.stop()
    _ = Job


def test_the_supervisor_follows_a_moved_log_file(sup):
    """Moved by logrotate, the file is recreated at its path; SIGUSR1 (logrotate's
    postrotate habit) is accepted and logged there."""
    r = _start(sup)
    moved = r.log.with_suffix(".1")
    r.log.rename(moved)
    r.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: r.log.exists(), timeout=10)
    r.proc.send_signal(signal.SIGTTIN)
    wait_until(lambda: "SIGTTIN" in r.logs(), timeout=10)
    assert "starting 2 workers" in moved.read_text() and "SIGTTIN" not in moved.read_text()


def test_json_logs(sup):
    import json

    r = _start(sup, args=("--log-format", "json"))
    wait_until(lambda: "supervisor ready" in r.logs(), timeout=10)
    lines = [json.loads(line) for line in r.logs().splitlines() if line.strip()]
    assert {"time", "level", "pid", "logger", "message"} <= set(lines[0])
    assert any("supervisor ready" in line["message"] for line in lines)


def test_a_scale_signal_sent_while_booting_is_acted_on_once_ready(sup, tmp_path):
    """SIGTTIN stops a process by default: sent before the handlers are in place, it
    must wait for them, not freeze the supervisor."""
    from pathlib import Path

    gate = tmp_path / "gate"
    r = sup(workers=1, modules='["examples.cpu", "tests.slowboot"]',
            env={"JOBVISOR_TEST_GATE": str(gate)})
    wait_until(lambda: Path(f"{gate}.reached").exists(), timeout=20, what="boot under way")
    r.proc.send_signal(signal.SIGTTIN)
    gate.touch()
    r.wait_workers(2)
    assert "SIGTTIN: 2 workers wanted" in r.logs()


def test_workers_follow_a_rotated_log_file(sup):
    """logrotate moves the file and sends SIGUSR1 to the supervisor only: workers, which
    ignore SIGUSR1, write their next lines to the new file too."""
    r = _start(sup, workers=1, extra="max_jobs_per_child = 1")
    moved = r.log.with_suffix(".1")
    r.log.rename(moved)
    r.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: r.log.exists(), timeout=10, what="the new log file")
    Queue("default", r.broker).enqueue("tests.jobfuncs:add", 1, 2).result(timeout=10)
    wait_until(lambda: "recycles after 1 jobs" in r.logs(), timeout=10,
               what="the worker's line in the new file")
    assert "recycles" not in moved.read_text()
