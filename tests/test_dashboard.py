"""The dashboard in a real headless Chromium, against a real dashboard process and Valkey."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import jobs
from jobs import JobState, Queue, RedisSettings, Worker
from jobs.cluster import paused
from jobs.stats import queue_stats
from tests import jobfuncs  # registers the functions the in-process workers run
from tests.web import Dashboard, browser_session, free_port, signed_in, users_file

SHOTS = Path(__file__).parent.parent / "docs" / "screenshots"


@pytest.fixture(scope="module")
def ns() -> str:
    return f"dash{os.getpid()}"


@pytest.fixture(scope="module")
def lib(server, ns):
    b = jobs.connect(server.url, redis_settings=RedisSettings(namespace=ns))
    yield b
    b.client.close()


@pytest.fixture(autouse=True)
def empty(lib, ns):
    yield
    keys = list(lib.client.scan_iter(match=f"{lib.keys.root}:*", count=1000))
    if keys:
        lib.client.delete(*keys)


@pytest.fixture(scope="module")
def dash(tmp_path_factory, server, ns):
    tmp = tmp_path_factory.mktemp("dashboard")
    d = Dashboard(tmp, server.url, ns, users=users_file(tmp))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def browser():
    yield from browser_session()


def open_as(browser, dash, name):
    from tests.web import USERS

    page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.dialogs = dialogs
    page.goto(f"{dash.base}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", USERS[name][1])
    page.click("button.primary")
    page.wait_for_url(f"{dash.base}/")
    return page


def dead_jobs(lib, count, function="tests.jobfuncs:key_error", queue="default"):
    q = Queue(queue, lib).options(max_attempts=1)
    ids = [j.id for j in q.enqueue_many((function,) for _ in range(count))]
    Worker([queue], broker=lib).run_until_empty()
    return ids


def actions_logged(dash):
    """What the dashboard's ``jobs.actions`` log lines say, in order."""
    return [line.split(" - ", 4)[-1] for line in dash.log.read_text().splitlines()
            if " - jobs.actions - " in line]


def shot(page, name):
    if os.environ.get("JOBVISOR_SCREENSHOTS"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_the_overview_shows_the_library_s_counts(browser, dash, lib):
    dead_jobs(lib, 2, queue="alpha")
    alpha = Queue("alpha", lib)
    for i in range(3):
        alpha.enqueue(jobfuncs.add, i, i)
    Queue("beta", lib).options(delay=600).enqueue(jobfuncs.add, 1, 1)
    page = open_as(browser, dash, "ada")
    expected = {s.queue: s for s in queue_stats(lib)}
    assert set(expected) == {"alpha", "beta"}
    for queue, stats in expected.items():
        for state in ("queued", "scheduled", "active", "completed", "dead", "canceled"):
            cell = page.locator(f"tr[data-queue={queue}] [data-count={state}]")
            assert cell.inner_text() == str(getattr(stats, state)), (queue, state)
    assert page.locator("tr[data-queue=alpha] [data-count=queued]").inner_text() == "3"
    page.wait_for_selector("#chart canvas")
    shot(page, "overview")


def test_a_dead_job_shows_its_traceback(browser, dash, lib):
    job = Queue("default", lib).options(max_attempts=1, meta={"triggered_by": "user:42"}).enqueue(
        jobfuncs.spin_then_fail, 0.0)
    Worker(["default"], broker=lib).run_until_empty()
    page = open_as(browser, dash, "ada")
    page.goto(f"{dash.base}/jobs/{job.id}")
    traceback = page.locator("pre[data-field=traceback]").first.inner_text()
    assert "Traceback (most recent call last)" in traceback
    assert "ValueError: failed after spinning" in traceback
    assert page.locator("[data-field=state]").inner_text() == "dead"
    assert json.loads(page.locator("pre[data-field=meta]").inner_text()) == {
        "triggered_by": "user:42"}
    shot(page, "job")


def test_requeue_from_the_page_moves_the_job_and_the_count(browser, dash, lib):
    [dead] = dead_jobs(lib, 1)
    page = open_as(browser, dash, "ada")
    page.goto(f"{dash.base}/queues/default?state=dead")
    assert page.locator("[data-state=dead] .count").inner_text() == "1"
    page.check(f"input[name=ids][value=\"{dead}\"]")
    page.select_option("select[name=action]", "requeue")
    page.click("button[name=scope][value=chosen]")
    page.wait_for_selector(".notice")
    assert "requeue: 1 of 1 chosen job(s)" in page.locator(".notice").inner_text()
    assert jobs.Job.fetch(dead, lib).state is JobState.QUEUED
    assert page.locator("[data-state=dead] .count").inner_text() == "0"
    assert page.locator("[data-state=queued] .count").inner_text() == "1"


def test_a_filter_narrows_the_list_and_act_on_all_matching_touches_exactly_those(
        browser, dash, lib):
    key_errors = dead_jobs(lib, 4)
    others = dead_jobs(lib, 3, "tests.jobfuncs:raises_bad_str")
    page = open_as(browser, dash, "ada")
    page.goto(f"{dash.base}/queues/default?state=dead")
    assert page.locator("tr[data-job]").count() == 7
    page.fill("input[name=error_type]", "KeyError")
    page.click("form.filters button.primary")
    page.wait_for_url("**error_type=KeyError**")
    listed = {page.locator("tr[data-job]").nth(i).get_attribute("data-job") for i in range(4)}
    assert page.locator("tr[data-job]").count() == 4 and listed == set(key_errors)
    shot(page, "queue")
    page.select_option("select[name=action]", "requeue")
    page.click("button[name=scope][value=all]")
    page.wait_for_selector(".notice")
    assert page.dialogs and "matching this filter" in page.dialogs[-1]
    assert "requeue: 4 of all dead jobs matching the filter" in page.locator(".notice").inner_text()
    for job_id in key_errors:
        assert jobs.Job.fetch(job_id, lib).state is JobState.QUEUED
    for job_id in others:
        assert jobs.Job.fetch(job_id, lib).state is JobState.DEAD


def test_a_viewer_sees_no_actions_and_its_posts_are_refused(browser, dash, lib):
    dead_jobs(lib, 2)
    page = open_as(browser, dash, "vic")
    page.goto(f"{dash.base}/queues/default?state=dead")
    assert page.locator("tr[data-job]").count() == 2
    assert page.locator("input[name=ids]").count() == 0
    assert page.locator("button[name=scope]").count() == 0
    assert page.get_by_text("Clear queued").count() == 0
    viewer = signed_in(dash.base, "vic")
    token = viewer.cookies["csrftoken"]
    refused = viewer.post("/queues/default/act", data={
        "_csrf_token": token, "state": "dead", "action": "delete", "scope": "all"})
    assert refused.status_code == 403
    api = httpx.post(f"{dash.base}/api/queues/default/jobs/delete",
                     json={"all_matching": True, "state": "dead"},
                     headers={"Authorization": "Bearer vic:vic-secret-1"})
    assert api.status_code == 403 and "needs the admin role" in api.json()["error"]
    assert Queue("default", lib).counts()["dead"] == 2
    admin = httpx.post(f"{dash.base}/api/queues/default/jobs/delete",
                       json={"all_matching": True, "state": "dead"},
                       headers={"Authorization": "Bearer ada:ada-secret-1"})
    assert admin.status_code == 200 and admin.json()["done"] == 2


def test_a_browser_post_without_the_csrf_token_is_refused(dash, lib):
    admin = signed_in(dash.base, "ada")
    assert admin.post("/queues/default/pause", data={}).status_code == 403
    assert admin.post("/queues/default/pause",
                      data={"_csrf_token": "0" * 128}).status_code == 403
    assert "default" not in paused(lib)
    done = admin.post("/queues/default/pause", data={"_csrf_token": admin.cookies["csrftoken"]})
    assert done.status_code == 303
    assert "default" in paused(lib)


def test_a_pause_and_resume_through_the_api_and_the_page_are_logged_and_recorded(dash, lib):
    from jobs.events import recent_events
    from tests.helpers import wait_until

    admin = {"Authorization": "Bearer ada:ada-secret-1"}
    done = httpx.post(f"{dash.base}/api/queues/audited/pause", headers=admin)
    assert done.status_code == 200 and done.json()["message"] == "paused audited"
    browser = signed_in(dash.base, "ada")
    resumed = browser.post("/queues/audited/pause",
                           data={"_csrf_token": browser.cookies["csrftoken"]})
    assert resumed.status_code == 303 and "audited" not in paused(lib)
    said = ["web:ada@127.0.0.1: pause queue=audited count=0 scope=queue",
            "web:ada@127.0.0.1: resume queue=audited count=0 scope=queue"]
    wait_until(lambda: [a for a in actions_logged(dash) if "queue=audited" in a] == said,
               timeout=10,
               what="the dashboard to log both actions")
    audit = [(e["who"], e["action"], e["q"], e["count"], e["scope"])
             for e in recent_events(lib, 20) if e["e"] == "action"]
    assert audit == [("web:ada@127.0.0.1", "pause", "audited", "0", "queue"),
                     ("web:ada@127.0.0.1", "resume", "audited", "0", "queue")]


def test_hostile_job_data_is_shown_as_text_and_runs_nothing(browser, dash, lib):
    payload = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">"
    job = Queue("default", lib).enqueue("tests.jobfuncs:record", payload)
    page = open_as(browser, dash, "ada")
    for url in (f"/jobs/{job.id}", "/queues/default?state=queued"):
        page.goto(dash.base + url)
        page.wait_for_load_state("load")
        assert page.evaluate("window.pwned") is None
        assert page.locator("img[src=x]").count() == 0
    page.goto(f"{dash.base}/jobs/{job.id}")
    assert json.dumps(payload) in page.locator("pre[data-field=args]").inner_text()
    assert page.dialogs == []
    headers = httpx.get(f"{dash.base}/login").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]


def test_a_change_through_the_library_appears_on_an_open_page_without_reload(
        browser, dash, lib):
    page = open_as(browser, dash, "ada")
    page.goto(f"{dash.base}/queues/default?state=queued")
    page.evaluate("window.stillHere = true")
    count = page.locator("[data-state=queued] .count")
    assert count.inner_text() == "0"
    Queue("default", lib).enqueue_many((jobfuncs.add, i, i) for i in range(3))
    from playwright.sync_api import expect

    expect(count).to_have_text("3", timeout=15_000)
    expect(page.locator("tr[data-job]")).to_have_count(3, timeout=15_000)
    assert page.evaluate("window.stillHere") is True  # refreshed in place, not reloaded


def test_signing_in_is_required_and_the_api_describes_itself(dash, lib):
    job = Queue("default", lib).options(meta={"source": "api"}).enqueue(jobfuncs.add, 2, 3)
    page = httpx.get(f"{dash.base}/queues/default", headers={"Accept": "text/html"})
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/queues/default"
    assert httpx.get(f"{dash.base}/api/queues").status_code == 401
    wrong = httpx.get(f"{dash.base}/api/queues", headers={"Authorization": "Bearer ada:nope"})
    assert wrong.status_code == 401
    auth = {"Authorization": "Bearer vic:vic-secret-1"}
    stats = httpx.get(f"{dash.base}/api/queue/stats", headers=auth).json()
    assert [(s["queue"], s["queued"]) for s in stats] == [("default", 1)]
    found = httpx.get(f"{dash.base}/api/job/{job.id}", headers=auth).json()
    assert found["state"] == "queued" and found["args"] == [2, 3]
    assert found["meta"] == {"source": "api"}
    assert httpx.get(f"{dash.base}/api/jobs/nosuchjob", headers=auth).status_code == 404
    listed = httpx.get(f"{dash.base}/api/queues/default/jobs",
                       params={"state": "queued", "limit": 10}, headers=auth).json()
    assert [j["id"] for j in listed["jobs"]] == [job.id] and listed["next"] is None
    schema = httpx.get(f"{dash.base}/api/openapi.json", headers=auth).json()
    for path in ("/api/queues", "/api/queues/{queue}/jobs", "/api/jobs/{job_id}",
                 "/api/queues/{queue}/jobs/{action}", "/api/hosts/{ident}/scale",
                 "/api/events"):
        assert path in schema["paths"], path


def test_dead_letters_grouped_from_the_newest_say_so_and_act_on_the_whole_group(dash, lib):
    dead_jobs(lib, 12)
    auth = {"Authorization": "Bearer ada:ada-secret-1"}
    groups = httpx.get(f"{dash.base}/api/queues/default/dead-groups", params={"scan": 5},
                       headers=auth).json()
    assert (groups["scanned"], groups["complete"], groups["groups"][0]["count"]) == (5, False, 5)
    page = httpx.get(f"{dash.base}/dead", params={"queue": "default", "scan": 5},
                     headers=auth).text
    assert "Grouped from the newest 5 of 12 dead jobs" in page
    assert "Requeue all" in page and "Requeue 5" not in page
    assert "scan=50" in page  # a link to group further back
    assert httpx.get(f"{dash.base}/dead", params={"scan": 0}, headers=auth).status_code == 400
    whole = httpx.get(f"{dash.base}/dead", params={"queue": "default"}, headers=auth).text
    assert "Requeue 12" in whole and "Grouped from the newest" not in whole
    done = httpx.post(f"{dash.base}/dead/default/act", headers=auth, data={
        "function": "tests.jobfuncs:key_error", "error_type": "KeyError", "action": "requeue"})
    assert done.status_code == 303
    assert Queue("default", lib).counts()["dead"] == 0


def test_jobs_a_limit_holds_back_are_listed_counted_and_cleared_as_queued(dash, lib):
    from jobs.limits import set_limit
    from tests import jobfuncs

    set_limit(queue="side", max_concurrency=1, broker=lib)
    running, *held = Queue("side", lib).enqueue_many((jobfuncs.add, i, i) for i in range(3))
    w = Worker(["side"], broker=lib)
    assert w.claim().id == running.id and w.claim() is None  # the limit holds the others
    auth = {"Authorization": "Bearer ada:ada-secret-1"}
    page = httpx.get(f"{dash.base}/queues/side", params={"state": "queued"}, headers=auth).text
    assert all(j.id in page for j in held) and page.count("held by limit q:side") == 2
    stats = httpx.get(f"{dash.base}/api/queues/side", headers=auth).json()
    assert (stats["queued"], stats["held"], stats["active"]) == (2, 2, 1)
    cleared = httpx.post(f"{dash.base}/api/queues/side/clear", headers=auth).json()
    assert cleared["done"] == 2
    assert {j.refresh().state for j in held} == {JobState.CANCELED}


def test_the_dashboard_will_not_listen_beyond_loopback_without_sign_in(tmp_path, server):
    config = tmp_path / "open.toml"
    config.write_text(f'[redis]\nurl = "{server.url}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "supervisor", "--config", str(config), "dashboard", "--bind",
         f"0.0.0.0:{free_port()}"], capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).parent.parent)
    assert done.returncode == 1
    assert "with no sign-in" in done.stderr and "users_file" in done.stderr


def test_the_app_mounts_inside_another_asgi_application(server, ns, lib):
    import msgspec
    from litestar import Litestar, asgi
    from litestar.testing import TestClient
    from litestar.types import Receive, Scope, Send

    from supervisor.config import Config
    from supervisor.web.app import create_app

    config = msgspec.convert({"redis": {"url": server.url, "namespace": ns}}, Config)
    inner = create_app(config)
    html = {"Accept": "text/html"}

    @asgi("/ops", is_mount=True, copy_scope=True)
    async def ops(scope: Scope, receive: Receive, send: Send) -> None:
        await inner(scope, receive, send)

    with TestClient(Litestar([ops])) as client:
        page = client.get("/ops/queues/default", headers=html)
        assert page.status_code == 200
        assert 'href="/ops/static/app.css"' in page.text and 'href="/ops/dead"' in page.text
        assert client.get("/ops/static/app.css").status_code == 200
        done = client.post("/ops/queues/default/pause",
                           data={"_csrf_token": client.cookies["csrftoken"]},
                           follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == "/ops/queues/default"
        assert "default" in paused(lib)
    # How Starlette's and FastAPI's Mount (and uvicorn --root-path) present a prefix.
    with TestClient(inner, root_path="/jobvisor") as client:
        page = client.get("/jobvisor/", headers=html)
        assert page.status_code == 200 and 'href="/jobvisor/hosts"' in page.text


def test_the_dashboard_s_readyz_follows_a_redis_outage(tmp_path):
    from tests.helpers import wait_until
    from tests.procs import Running
    from tests.server import ValkeyServer

    srv = ValkeyServer(tmp_path / "own")
    srv.start()
    (tmp_path / "s").mkdir()
    (tmp_path / "d").mkdir()
    sup = Running(tmp_path / "s", srv, "ready", workers=1)
    d = Dashboard(tmp_path / "d", srv.url, "ready", extra="[health]\nredis_timeout = 0.5\n")

    def ready() -> tuple[int, dict]:
        reply = httpx.get(f"{d.base}/readyz", timeout=5)
        return reply.status_code, reply.json()

    try:
        sup.wait_workers(1)
        wait_until(lambda: ready()[0] == 200, timeout=20, what="ready")
        status, body = ready()
        assert status == 200
        assert body["status"] == "ok"
        assert [c["name"] for c in body["checks"]] == ["redis", "supervisors"]
        srv.stop()
        _, body = wait_until(lambda: (r := ready())[0] == 503 and r, timeout=10,
                                  what="/readyz to fail")
        assert {c["name"] for c in body["checks"] if not c["ok"]} == {"redis", "supervisors"}
        assert httpx.get(f"{d.base}/healthz").json() == {"status": "ok"}
        srv.start()
        wait_until(lambda: ready()[0] == 200, timeout=20, what="ready again")
    finally:
        d.stop()
        sup.stop()
        srv.stop()


def test_every_page_renders_without_a_script_or_policy_error(browser, dash, lib, tmp_path):
    """Each page in a real browser: no console error, no CSP violation; with
    JOBVISOR_SCREENSHOTS=1 the pictures in docs/screenshots are taken from here."""
    from tests.helpers import wait_until
    from tests.procs import Running

    sup = Running(tmp_path, type("S", (), {"url": lib.url})(), lib.keys.ns, workers=2)
    try:
        sup.wait_workers(2)
        dead = dead_jobs(lib, 3)
        dead_jobs(lib, 2, "tests.jobfuncs:raises_bad_str")
        Queue("default", lib).options(max_attempts=1).enqueue(jobfuncs.spin_then_fail, 0.0)
        spin = Queue("default", lib).enqueue("examples.cpu:spin", 8)
        Queue("default", lib).enqueue_many(("examples.cpu:count_primes", 200_000 + i)
                                           for i in range(40))
        Queue("reports", lib).options(delay=3600).enqueue(jobfuncs.add, 1, 2)
        wait_until(lambda: spin.refresh().state is JobState.ACTIVE, timeout=20)
        page = open_as(browser, dash, "ada")
        problems: list[str] = []
        page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
        page.on("pageerror", lambda e: problems.append(str(e)))
        pages = {"hosts": "/hosts", "overview": "/", "running-job": f"/jobs/{spin.id}",
                 "queue": "/queues/default?state=dead", "job": f"/jobs/{dead[0]}",
                 "dead-letters": "/dead", "clear": "/queues/default/clear"}
        for name, url in pages.items():
            reply = page.goto(dash.base + url)
            assert reply is not None and reply.status == 200, (url, reply and reply.status)
            page.wait_for_timeout(600)  # one live refresh
            shot(page, name)
        assert page.locator("tr[data-worker]").count() >= 0
        page.goto(dash.base + "/hosts")
        assert page.locator("tr[data-worker]").count() == 2
        assert problems == []
    finally:
        sup.stop()


def test_the_event_stream_sends_recent_events_then_new_ones(dash, lib):
    first = Queue("default", lib).enqueue(jobfuncs.add, 1, 1)
    auth = {"Authorization": "Bearer vic:vic-secret-1"}
    seen: list[dict] = []
    with httpx.stream("GET", f"{dash.base}/api/events", params={"recent": 5}, headers=auth,
                      timeout=10) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        later = None
        for line in stream.iter_lines():
            if not line.startswith("data: "):
                continue
            seen.append(json.loads(line[len("data: "):]))
            if seen[-1].get("id") == first.id and later is None:
                later = Queue("default", lib).enqueue(jobfuncs.add, 2, 2)
            if later is not None and seen[-1].get("id") == later.id:
                break
    assert [e["e"] for e in seen if e.get("id") == first.id] == ["enqueued"]
    assert seen[-1]["e"] == "enqueued" and seen[-1]["id"] == later.id
    assert httpx.get(f"{dash.base}/api/events").status_code == 401


def test_scale_and_reload_a_supervisor_from_the_hosts_page(browser, dash, lib, tmp_path):
    from playwright.sync_api import expect

    from tests.helpers import wait_until
    from tests.procs import Running

    sup = Running(tmp_path, type("S", (), {"url": lib.url})(), lib.keys.ns, workers=1)
    try:
        sup.wait_workers(1)
        page = open_as(browser, dash, "ada")
        page.goto(f"{dash.base}/hosts")
        host = page.locator("section.host").first
        ident = host.get_attribute("data-host")
        assert ident and ident.endswith(f":{sup.proc.pid}")
        host.locator("input[name=workers]").fill("3")
        host.get_by_role("button", name="Scale").click()
        expect(page.locator(".notice")).to_contain_text(f"asked {ident} to run 3 workers")
        sup.wait_workers(3)
        expect(page.locator("tr[data-worker]")).to_have_count(3, timeout=15_000)
        page.locator("section.host").first.get_by_role("button", name="Reload").click()
        expect(page.locator(".notice")).to_contain_text(f"asked {ident} to reload")
        wait_until(lambda: "reload" in sup.logs().lower(), timeout=15, what="the reload")
        refused = httpx.post(f"{dash.base}/api/hosts/{ident}/scale", json={"workers": 2},
                             headers={"Authorization": "Bearer vic:vic-secret-1"})
        assert refused.status_code == 403
        too_many = httpx.post(f"{dash.base}/api/hosts/{ident}/scale", json={"workers": 100_000},
                              headers={"Authorization": "Bearer ada:ada-secret-1"})
        assert too_many.status_code == 400 and "refused" in too_many.json()["error"]
    finally:
        sup.stop()


# -- schedules and batches ---------------------------------------------------------------------

def test_the_schedules_page_lists_each_schedule_and_an_admin_steers_it(browser, dash, lib):
    from jobs import Schedule, schedules
    from jobs.query import schedule_rows
    from jobs.schedule_control import paused_schedules, publish_config

    # A supervisor's config.toml schedule, as it publishes it, and one added through the API.
    publish_config([Schedule(name="nightly", cron="0 3 * * *", job="tests.jobfuncs:add",
                             args=[1, 2], timezone="Europe/Berlin")], lib)
    schedules.add(Schedule(name="digest", cron="30 8 * * mon", job="tests.jobfuncs:add",
                           args=[20, 22], queue="cron"), lib)
    expected = {r["name"]: r for r in schedule_rows(lib)}
    page = open_as(browser, dash, "ada")
    page.goto(f"{dash.base}/schedules")
    for name in ("nightly", "digest"):
        row = page.locator(f"tr[data-schedule={name}]")
        assert expected[name]["cron"] in row.inner_text()
        first = row.locator("[data-field=next] time").first.get_attribute("datetime")
        assert first == expected[name]["next"][0]
    assert "Europe/Berlin" in page.locator("tr[data-schedule=nightly]").inner_text()
    shot(page, "schedules")
    page.click("tr[data-schedule=nightly] button[data-action=pause]")
    page.wait_for_selector(".notice")
    assert "nightly: paused on every supervisor" in page.locator(".notice").inner_text()
    assert set(paused_schedules(lib)) == {"nightly"}
    status = page.locator("tr[data-schedule=nightly] [data-field=status]")
    assert status.inner_text() == "paused"
    page.click("tr[data-schedule=nightly] button[data-action=resume]")
    page.wait_for_selector("text=nightly: resumed")
    assert paused_schedules(lib) == {} and status.inner_text() == "enabled"
    page.click("tr[data-schedule=digest] button[data-action=trigger]")
    page.wait_for_selector("text=triggered digest")
    job_id = page.locator(".notice").inner_text().split()[-1]
    job = jobs.Job.fetch(job_id, lib)
    assert job_id.startswith("cron-now.digest.") and job.queue == "cron"
    assert page.dialogs and "Enqueue tests.jobfuncs:add of digest now?" in page.dialogs[-1]


def test_a_viewer_sees_schedules_without_buttons_and_the_api_steers_them(browser, dash, lib):
    from jobs import Schedule, schedules
    from jobs.schedule_control import paused_schedules

    schedules.add(Schedule(name="digest", cron="30 8 * * mon", job="tests.jobfuncs:add",
                           args=[1, 1]), lib)
    page = open_as(browser, dash, "vic")
    page.goto(f"{dash.base}/schedules")
    assert page.locator("tr[data-schedule=digest]").count() == 1
    assert page.locator("tr[data-schedule=digest] button").count() == 0
    viewer = {"Authorization": "Bearer vic:vic-secret-1"}
    admin = {"Authorization": "Bearer ada:ada-secret-1"}
    listed = httpx.get(f"{dash.base}/api/schedules", headers=viewer).json()
    assert [(s["name"], s["source"], s["paused"]) for s in listed] == [
        ("digest", "api", False)]
    refused = httpx.post(f"{dash.base}/api/schedules/digest/pause", headers=viewer)
    assert refused.status_code == 403 and paused_schedules(lib) == {}
    done = httpx.post(f"{dash.base}/api/schedules/digest/pause", headers=admin)
    assert done.status_code == 200 and done.json()["changed"] is True
    assert set(paused_schedules(lib)) == {"digest"}
    trigger = httpx.post(f"{dash.base}/api/schedules/digest/trigger", headers=admin).json()
    assert jobs.Job.fetch(trigger["job_id"], lib).state is JobState.QUEUED
    missing = httpx.post(f"{dash.base}/api/schedules/nope/resume", headers=admin)
    assert missing.status_code == 404 and "no schedule 'nope'" in missing.json()["error"]


def test_the_batches_page_shows_each_batch_s_progress_as_the_library_does(browser, dash, lib):
    from jobs import BatchHandle, batch

    members = [jobfuncs.add.call(1, 1), jobfuncs.add.call(2, 2),
               jobfuncs.gives_up.options(queue="side").call(),
               jobfuncs.add.options(queue="side").call(3, 3)]
    handle = batch(members, name="nightly sums", on_success=jobfuncs.record.call(),
                   on_complete=jobfuncs.record.call()).enqueue(lib)
    Worker(["side"], broker=lib).run_until_empty()  # one dead, one completed, two queued
    jobs.Job(handle.jobs()[0].id, lib).cancel()
    other = batch([jobfuncs.add.call(5, 5)]).enqueue(lib)
    progress = handle.progress()
    assert (progress.completed, progress.failed, progress.canceled, progress.pending) == (
        1, 1, 1, 1)
    page = open_as(browser, dash, "vic")
    page.goto(f"{dash.base}/batches")
    rows = page.locator("tr[data-batch]")
    assert [rows.nth(i).get_attribute("data-batch") for i in range(2)] == [other.id, handle.id]
    row = page.locator(f"tr[data-batch=\"{handle.id}\"]")
    shown = {f: int(row.locator(f"[data-count={f}]").inner_text())
             for f in ("total", "completed", "dead", "canceled", "pending")}
    assert shown == {"total": progress.total, "completed": progress.completed,
                     "dead": progress.failed, "canceled": progress.canceled,
                     "pending": progress.pending}
    bar = row.locator("progress")
    assert (bar.get_attribute("max"), bar.get_attribute("value")) == ("4", "3")
    assert row.locator("[data-callback=success]").inner_text() == "pending"
    assert "nightly sums" in row.inner_text()
    shot(page, "batches")
    page.click(f"a[href=\"/batches/{handle.id}\"]")
    page.wait_for_url(f"**/batches/{handle.id}")
    shot(page, "batch")
    states = {page.locator("tr[data-job]").nth(i).get_attribute("data-job"):
              page.locator("tr[data-job] .pill").nth(i).inner_text() for i in range(4)}
    assert states == {j.id: j.refresh().state.value for j in BatchHandle(handle.id, lib).jobs()}
    api = httpx.get(f"{dash.base}/api/batches", params={"limit": 1},
                    headers={"Authorization": "Bearer vic:vic-secret-1"}).json()
    assert [b["id"] for b in api["batches"]] == [other.id] and api["next"]
    detail = httpx.get(f"{dash.base}/api/batches/{handle.id}", params={"limit": 2},
                       headers={"Authorization": "Bearer vic:vic-secret-1"}).json()
    assert detail["batch"]["progress"]["failed"] == 1 and detail["next_offset"] == 2
    assert [m["id"] for m in detail["members"]] == [j.id for j in handle.jobs()[:2]]


def test_the_hosts_page_shows_pools_and_scales_and_pauses_each(browser, dash, lib, tmp_path):
    from playwright.sync_api import expect

    from tests.helpers import wait_until
    from tests.procs import Running

    tail = '[[pools]]\nname = "reports"\nqueues = ["reports", "pdf"]\nworkers = 1\n'
    sup = Running(tmp_path, type("S", (), {"url": lib.url})(), lib.keys.ns, workers=1,
                  tail=tail)
    try:
        sup.wait_workers(2)
        page = open_as(browser, dash, "ada")
        page.goto(f"{dash.base}/hosts")
        host = page.locator("section.host").first
        ident = host.get_attribute("data-host")
        pool = host.locator("table.pools tr[data-pool=reports]")
        expect(pool).to_contain_text("reports, pdf")
        expect(host.locator("table.pools tr[data-pool=default]")).to_contain_text("running")
        expect(host.locator("tr[data-worker][data-pool=reports]")).to_have_count(1)
        pool.locator("input[name=workers]").fill("2")
        pool.get_by_role("button", name="Scale").click()
        expect(page.locator(".notice")).to_contain_text(
            f"asked {ident} to run 2 workers in pool reports (now 1)")
        expect(page.locator("tr[data-worker][data-pool=reports]")).to_have_count(
            2, timeout=15_000)
        expect(page.locator("tr[data-worker][data-pool=default]")).to_have_count(1)
        page.locator("table.pools tr[data-pool=reports]").get_by_role(
            "button", name="Pause").click()
        expect(page.locator(".notice")).to_contain_text(f"asked {ident} to pause pool reports")
        expect(page.locator("table.pools tr[data-pool=reports]")).to_contain_text(
            "paused", timeout=15_000)
        admin = {"Authorization": "Bearer ada:ada-secret-1"}
        api = f"{dash.base}/api/hosts/{ident}"
        scaled = httpx.post(f"{api}/scale", json={"workers": 1, "pool": "reports"},
                            headers=admin)
        assert scaled.status_code == 200
        assert scaled.json()["message"] == f"asked {ident} to run 1 workers in pool reports (now 2)"
        sup.wait_workers(2)
        resumed = httpx.post(f"{api}/pools/reports/resume", headers=admin)
        assert resumed.status_code == 200, resumed.text
        said = {f"web:ada@127.0.0.1: scale queue=- count=1 scope={ident} pool reports",
                f"web:ada@127.0.0.1: resume pool queue=- count=0 scope={ident} pool reports"}
        # The dashboard process writes its log line as the reply goes out: read until it is
        # there (a loaded machine showed the reply first).
        wait_until(lambda: said <= set(actions_logged(dash)), timeout=10,
                   what="the dashboard to log both actions")
        unknown = httpx.post(f"{api}/pools/mail/pause", headers=admin)
        assert unknown.status_code == 400 and "has no pool 'mail'" in unknown.json()["error"]
        hosts = httpx.get(f"{dash.base}/api/hosts", headers=admin).json()
        assert [p["name"] for p in hosts[0]["pools"]] == ["default", "reports"]
    finally:
        sup.stop()


def test_the_hosts_page_shows_each_worker_s_health_flag(dash, lib, tmp_path):
    from tests.helpers import wait_until
    from tests.procs import Running

    sup = Running(tmp_path, type("S", (), {"url": lib.url})(), lib.keys.ns, workers=1,
                  extra="max_memory_per_child = 1")
    try:
        sup.wait_workers(1)
        client = signed_in(dash.base, "vic")
        page = wait_until(lambda: (p := client.get("/hosts").text) and "health-memory" in p
                          and p, timeout=15, what="the worker's flag on the hosts page")
        assert "<th>Health</th>" in page
        assert 'class="pill health-memory" title="RSS ' in page
        assert "above max_memory_per_child 1 MiB" in page
    finally:
        sup.stop()
