"""The CLI over the query layer against a real server: jobs list, delete, clear, dead
groups; output, JSON shapes, exit codes and the audit trail."""

from __future__ import annotations

import getpass
import json
import os
import pty
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import Job, JobNotFound, JobState, Queue, Worker
from jobs.events import recent_events
from jobs.limits import set_limit
from jobs.query import list_jobs
from tests import jobfuncs

ROOT = Path(__file__).parent.parent
CURSOR = re.compile(r"--cursor (\S+)$")
WHO = f"cli:{getpass.getuser()}@{socket.gethostname()}"


@pytest.fixture
def config(tmp_path, server, namespace, broker):
    """A config that reaches the test server in this test's namespace (no supervisor runs:
    nothing claims the jobs a test lays out)."""
    path = tmp_path / "config.toml"
    path.write_text(f'[redis]\nurl = "{server.url}"\nnamespace = "{namespace}"\n\n'
                    f'[supervisor]\ndata_dir = "{tmp_path / "var"}"\n')
    return path


def cli(config: Path, *args: str, stdin: int = subprocess.DEVNULL,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, stdin=stdin)


def make_dead(broker, count: int, function: str = "tests.jobfuncs:key_error",
              queue: str = "default") -> list[str]:
    q = Queue(queue, broker).options(max_attempts=1)
    ids = [j.id for j in q.enqueue_many((function,) for _ in range(count))]
    Worker([queue], broker=broker).run_until_empty()
    return ids


def listed_pages(config: Path, *args: str) -> tuple[list[str], list[str]]:
    """Ids of every page of ``jobs list ARGS``, following the cursor each page prints; and
    the footer lines seen."""
    ids: list[str] = []
    footers: list[str] = []
    cursor: list[str] = []
    for _ in range(100):
        out = cli(config, "jobs", "list", *args, *cursor)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        found = CURSOR.search(lines[-1])
        if found:
            footers.append(lines.pop())
        if lines and lines[0].startswith("ID "):
            ids += [line.split()[0] for line in lines[1:]]
        if not found:
            return ids, footers
        cursor = ["--cursor", found.group(1)]
    raise AssertionError("the cursor never ran out")


def test_jobs_list_filters_and_its_printed_cursor_reaches_every_match_once(config, broker):
    q = Queue("side", broker)
    wanted = [j.id for j in q.enqueue_many(("tests.jobfuncs:add", i, 1) for i in range(23))]
    records = [j.id for j in q.enqueue_many(("tests.jobfuncs:record", f"t{i}")
                                            for i in range(6))]
    ids, footers = listed_pages(config, "--queue", "side", "--function", "tests.jobfuncs:add",
                                "--limit", "5", "--oldest-first")
    assert ids == wanted  # queued, oldest first: the order they run in, each once
    assert footers[0].startswith("next page: --cursor ") and len(footers) == 4  # 5+5+5+5+3
    newest = cli(config, "jobs", "list", "--queue", "side", "--limit", "3").stdout.splitlines()
    assert newest[0].split() == ["ID", "FUNCTION", "STATE", "ATTEMPTS", "IN", "STATE",
                                 "LAST", "ERROR"]
    assert [line.split()[:4] for line in newest[1:4]] == [
        [i, "tests.jobfuncs:record", "queued", "0/3"] for i in reversed(records[-3:])]
    text = cli(config, "jobs", "list", "--queue", "side", "--text", "[7,1]").stdout
    assert text.splitlines()[1].split()[0] == wanted[7] and len(text.splitlines()) == 2
    empty = cli(config, "jobs", "list", "--queue", "side", "--state", "dead")
    assert empty.returncode == 0 and empty.stdout.strip() == "no dead jobs in queue 'side'"


def test_a_sparse_filter_says_how_far_it_looked_and_goes_on_from_there(config, broker):
    make_dead(broker, 120)
    rare = make_dead(broker, 3, "tests.jobfuncs:raises_bad_str")
    make_dead(broker, 60)
    ids, footers = listed_pages(config, "--state", "dead", "--error-type",
                                "tests.jobfuncs.BadStr", "--scan", "50", "--oldest-first")
    assert sorted(ids) == sorted(rare)  # each once (one millisecond's deaths order by id)
    assert re.fullmatch(r"looked at \d+ jobs; more may match: --cursor \S+", footers[0])
    out = cli(config, "jobs", "list", "--state", "dead", "--cursor", "nope")
    assert out.returncode == 1 and "cursor 'nope' is not one" in out.stderr
    out = cli(config, "jobs", "list", "--state", "lost")
    assert out.returncode == 2 and "invalid choice: 'lost'" in out.stderr


def test_jobs_list_json_is_the_query_layers_page(config, broker):
    dead = make_dead(broker, 4)
    out = cli(config, "jobs", "list", "--state", "dead", "--limit", "3", "--json")
    page = json.loads(out.stdout)
    assert set(page) == {"jobs", "next", "scanned", "exhausted"}
    assert page["exhausted"] is True and page["scanned"] == 3 and page["next"]
    library = list_jobs(broker, "default", "dead", limit=3)
    assert [j["id"] for j in page["jobs"]] == [r.id for r in library.jobs]
    assert page["next"] == library.next
    shown = json.loads(cli(config, "show", dead[0], "--json").stdout)
    assert set(page["jobs"][0]) == set(shown)  # the job as every surface shows it
    assert page["jobs"][0]["error"]["type"] == "KeyError"
    rest = json.loads(cli(config, "jobs", "list", "--state", "dead", "--limit", "3", "--json",
                          "--cursor", page["next"]).stdout)
    assert len(rest["jobs"]) == 1 and rest["next"] is None
    assert {j["id"] for j in page["jobs"] + rest["jobs"]} == set(dead)


def _audit(broker) -> list[dict[str, str]]:
    return [e for e in recent_events(broker, 200) if e.get("e") == "action"]


def test_delete_final_and_pending_jobs_refuses_running_and_unknown_ones(config, broker):
    final = make_dead(broker, 1)[0]
    broker.jobs.append_log(final, "a line", 10)
    pending = Queue("default", broker).options(delay=600).enqueue(jobfuncs.add, 1, 2).id
    other = Queue("other", broker).enqueue(jobfuncs.add, 3, 4).id  # queued, another queue
    running = Queue("default", broker).enqueue(jobfuncs.add, 2, 2)
    assert Worker(["default"], broker=broker).claim().id == running.id
    out = cli(config, "delete", final, pending, running.id, "nosuchjob", other)
    assert out.returncode == 1
    assert out.stdout.strip() == "deleted 3 job(s), skipped 2"
    assert f"jobvisor: {running.id}: running: cancel it first (`jobvisor cancel " \
        f"{running.id}`)" in out.stderr
    assert "jobvisor: nosuchjob: no such job" in out.stderr
    for gone in (final, pending, other):
        with pytest.raises(JobNotFound):
            Job.fetch(gone, broker)
    assert broker.jobs.job_log(final) == []
    assert running.refresh().state is JobState.ACTIVE
    for queue in ("default", "other"):
        for state in ("dead", "canceled", "scheduled", "queued"):
            assert broker.client.zcard(broker.keys.state_index(queue, state)) == 0
    audit = _audit(broker)
    assert {(e["action"], e["q"], e["count"], e["who"]) for e in audit} == {
        ("delete", "default", "2", WHO), ("delete", "other", "1", WHO)}
    done = Queue("default", broker).enqueue(jobfuncs.add, 5, 5)
    Worker(["default"], broker=broker).run_until_empty()
    shaped = cli(config, "delete", done.id, "nosuchjob", "--json")
    assert shaped.returncode == 1
    report = json.loads(shaped.stdout)
    assert report["deleted"] == [done.id] and list(report["skipped"]) == ["nosuchjob"]


def _answer_on_a_terminal(config: Path, answer: str, *args: str) -> subprocess.CompletedProcess[
        str]:
    """Run the CLI with a real terminal as its stdin, the answer already typed."""
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer.encode())
        return cli(config, *args, stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)


def test_clear_asks_on_a_terminal_refuses_without_one_and_clears_with_yes(config, broker):
    q = Queue("bulk", broker)
    queued = [j.id for j in q.enqueue_many((jobfuncs.add, i, 1) for i in range(1100))]
    later = q.options(delay=600).enqueue(jobfuncs.add, 0, 0)

    refused = cli(config, "clear", "bulk")  # stdin: /dev/null
    assert refused.returncode == 1 and "pass --yes" in refused.stderr
    assert "1,100 queued jobs of queue 'bulk'" in refused.stderr
    declined = _answer_on_a_terminal(config, "n\n", "clear", "bulk")
    assert declined.returncode == 1
    assert "clear 1,100 queued jobs of queue 'bulk'? [y/N]" in declined.stderr
    assert q.counts()["queued"] == 1100 and q.counts()["canceled"] == 0

    accepted = _answer_on_a_terminal(config, "y\n", "clear", "bulk")
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.strip() == "cleared 1,100 queued jobs of queue 'bulk'"
    assert q.counts()["queued"] == 0 and q.counts()["canceled"] == 1100
    assert later.refresh().state is JobState.SCHEDULED
    reason = Job.fetch(queued[0], broker).record.cancel_reason
    assert reason == f"queue cleared by {WHO}"

    q.enqueue_many((jobfuncs.add, i, 2) for i in range(3))
    forced = cli(config, "clear", "bulk", "--yes", "--json")
    assert json.loads(forced.stdout) == {"queue": "bulk", "cleared": 3, "held": 0}
    assert cli(config, "clear", "bulk", "--yes").stdout.strip() == \
        "queue 'bulk' has no queued jobs: nothing to clear"
    typo = cli(config, "clear", "bulkk", "--yes")
    assert typo.returncode == 1 and "did you mean 'bulk'?" in typo.stderr
    audit = _audit(broker)
    assert [(e["action"], e["count"]) for e in audit] == [("cancel", "1100"), ("cancel", "3")]
    assert all(e["who"] == WHO for e in audit)


def test_clear_cancels_the_jobs_a_limit_holds_back_and_says_how_many(config, broker):
    set_limit(queue="side", max_concurrency=1, broker=broker)
    first, second, third = Queue("side", broker).enqueue_many(
        (jobfuncs.add, i, i) for i in range(3))
    w = Worker(["side"], broker=broker)
    assert w.claim().id == first.id and w.claim() is None  # the limit holds the others
    fourth = Queue("side", broker).enqueue(jobfuncs.add, 4, 4)
    refused = cli(config, "clear", "side")
    assert "would cancel 3 queued jobs of queue 'side'" in refused.stderr
    out = cli(config, "clear", "side", "--yes")
    assert out.stdout.strip() == ("cleared 3 queued jobs of queue 'side' (2 of them held "
                                  "back by a rate or concurrency limit)")
    assert {j.refresh().state for j in (second, third, fourth)} == {JobState.CANCELED}
    assert first.refresh().state is JobState.ACTIVE
    assert Queue("side", broker).counts()["queued"] == 0


def test_dead_groups_agree_with_jobs_list_and_dead_requeue(config, broker):
    make_dead(broker, 5)
    bad = make_dead(broker, 2, "tests.jobfuncs:raises_bad_str")
    out = cli(config, "dead", "groups")
    assert out.returncode == 0, out.stderr
    rows = [line.split()[:3] for line in out.stdout.splitlines()[1:3]]
    assert rows == [["tests.jobfuncs:key_error", "KeyError", "5"],
                    ["tests.jobfuncs:raises_bad_str", "tests.jobfuncs.BadStr", "2"]]
    shaped = json.loads(cli(config, "dead", "groups", "--json").stdout)
    assert set(shaped) == {"groups", "scanned", "complete"}
    assert shaped["scanned"] == 7 and shaped["complete"] is True
    assert set(shaped["groups"][0]) == {"function", "error_type", "count", "last_at",
                                        "message"}
    for g in shaped["groups"]:  # each group is the filter jobs list and dead requeue take
        where = ("--function", g["function"], "--error-type", g["error_type"])
        page = json.loads(cli(config, "jobs", "list", "--state", "dead", *where,
                              "--json").stdout)
        assert len(page["jobs"]) == g["count"]
        assert len(Queue("default", broker).dead(function=g["function"],
                                                 error_type=g["error_type"])) == g["count"]
    requeued = cli(config, "dead", "requeue", "--function", "tests.jobfuncs:raises_bad_str",
                   "--error-type", "tests.jobfuncs.BadStr", "--json")
    assert json.loads(requeued.stdout) == {"requeued": 2}
    assert {r.id for r in list_jobs(broker, "default", "queued").jobs} == set(bad)
    assert _audit(broker)[-1]["who"] == WHO
    refused = cli(config, "dead", "groups", "--function", "x")
    assert refused.returncode == 1 and "no filter" in refused.stderr


def test_dead_requeue_of_one_job_names_its_queue_or_state(config, broker):
    dead = make_dead(broker, 1, queue="other")[0]
    wrong = cli(config, "dead", "requeue", dead)
    assert wrong.returncode == 1
    assert f"job {dead} is not on queue 'default' but on 'other': add --queue other" in \
        wrong.stderr
    assert cli(config, "dead", "requeue", dead, "--queue", "other").returncode == 0
    again = cli(config, "dead", "purge", dead, "--queue", "other")
    assert again.returncode == 1 and f"job {dead} is queued, not dead" in again.stderr
    assert _audit(broker)[-1]["action"] == "requeue"
