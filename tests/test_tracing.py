"""OpenTelemetry spans: an enqueue's span is the parent of each run's, in this process and
in a supervisor's worker; nothing is written or started without a provider or without
the package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from jobs import Queue, Worker, batch, enqueue_many
from jobs.options import Call
from tests import tracefuncs
from tests.helpers import wait_until
from tests.procs import Running

ROOT = Path(__file__).parent.parent
NO_BACKOFF = {"kind": "fixed", "base": 0.0, "jitter": 0.0}


@pytest.fixture
def spans():
    """A tracer provider for this test, set the way an application sets it; unset after."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # what opentelemetry's own tests reset
    trace._TRACER_PROVIDER = None


def named(exporter, prefix: str) -> list:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


def test_a_run_is_the_child_of_its_enqueue_and_the_job_s_spans_nest_under_it(broker, spans):
    with trace.get_tracer("app").start_as_current_span("request") as request:
        job = tracefuncs.traced.enqueue()
    carried = json.loads(broker.client.hget(broker.keys.job(job.id), "tp"))
    assert carried["traceparent"].startswith("00-")
    assert Worker(broker=broker).run_until_empty() == {"completed": 1}
    (enqueue,) = named(spans, "jobvisor.enqueue ")
    (run,) = named(spans, "jobvisor.run ")
    (inside,) = named(spans, "inside the job")
    assert enqueue.name == "jobvisor.enqueue tests.tracefuncs:traced"
    assert enqueue.parent.span_id == request.get_span_context().span_id
    assert enqueue.kind is trace.SpanKind.PRODUCER
    assert run.name == "jobvisor.run tests.tracefuncs:traced"
    assert run.parent.span_id == enqueue.context.span_id
    assert run.context.trace_id == enqueue.context.trace_id == request.get_span_context().trace_id
    assert run.kind is trace.SpanKind.CONSUMER
    assert {k: run.attributes[k] for k in ("jobvisor.job.id", "jobvisor.queue",
                                           "jobvisor.attempt", "jobvisor.outcome")} == {
        "jobvisor.job.id": job.id, "jobvisor.queue": "default", "jobvisor.attempt": 1,
        "jobvisor.outcome": "completed"}
    assert enqueue.attributes["jobvisor.job.id"] == job.id
    assert inside.parent.span_id == run.context.span_id


def test_each_attempt_is_a_run_span_with_its_outcome(broker, spans):
    job = tracefuncs.traced.options(backoff=NO_BACKOFF).enqueue(fail=True)
    assert Worker(broker=broker).run_until_empty() == {"scheduled": 1, "dead": 1}
    (enqueue,) = named(spans, "jobvisor.enqueue ")
    runs = named(spans, "jobvisor.run ")
    assert [(r.attributes["jobvisor.attempt"], r.attributes["jobvisor.outcome"])
            for r in runs] == [(1, "retried"), (2, "dead")]
    for r in runs:
        assert r.parent.span_id == enqueue.context.span_id
        assert r.attributes["jobvisor.job.id"] == job.id
        assert r.status.status_code is trace.StatusCode.ERROR
        assert r.status.description == "ValueError: asked to fail"
        assert [e.name for e in r.events] == ["exception"]


def test_bulk_enqueues_and_batches_give_each_job_its_own_enqueue_span(broker, spans):
    jobs = enqueue_many([Call("tests.tracefuncs:traced") for _ in range(3)], broker)
    handle = batch([tracefuncs.traced.call(), tracefuncs.traced.call()]).enqueue(broker)
    members = handle.jobs()
    Worker(broker=broker).run_until_empty()
    enqueues = {s.attributes["jobvisor.job.id"]: s for s in named(spans, "jobvisor.enqueue ")}
    runs = {s.attributes["jobvisor.job.id"]: s for s in named(spans, "jobvisor.run ")}
    ids = [j.id for j in [*jobs, *members]]
    assert sorted(enqueues) == sorted(runs) == sorted(ids)
    for job_id in ids:
        assert runs[job_id].parent.span_id == enqueues[job_id].context.span_id


def test_an_inline_run_is_a_child_of_the_caller_s_span(broker, spans):
    with trace.get_tracer("app").start_as_current_span("request") as request:
        job = tracefuncs.traced.options(inline=True).enqueue()
    assert job.result() == "traced"
    (run,) = named(spans, "jobvisor.run ")
    assert run.parent.span_id == request.get_span_context().span_id
    assert run.attributes["jobvisor.outcome"] == "completed"
    assert named(spans, "jobvisor.enqueue ") == []


def test_without_a_provider_nothing_is_traced_or_stored(broker):
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    job = tracefuncs.traced.enqueue()
    assert broker.client.hget(broker.keys.job(job.id), "tp") is None
    assert Worker(broker=broker).run_until_empty() == {"completed": 1}


def test_a_provider_set_after_the_first_enqueue_traces_the_next_ones(broker):
    """An application may set its provider after jobs were enqueued (a late setup): the
    cheap look for "no provider" must not hide it."""
    first = tracefuncs.traced.enqueue()
    assert broker.client.hget(broker.keys.job(first.id), "tp") is None
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    try:
        later = tracefuncs.traced.enqueue()
        assert broker.client.hget(broker.keys.job(later.id), "tp") is not None
        assert [s.attributes["jobvisor.job.id"] for s in named(exporter, "jobvisor.enqueue ")] \
            == [later.id]
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None


def test_without_the_package_jobs_enqueue_and_run_as_before(broker, server):
    """A process where `import opentelemetry` fails, as where the extra is not installed."""
    script = f"""
import sys
sys.modules["opentelemetry"] = None  # any import of it now raises ImportError
import jobs
from jobs import tracing, Queue, RedisSettings, Worker
import tests.jobfuncs
assert tracing.AVAILABLE is False and tracing.tracer() is None
broker = jobs.connect({server.url!r}, redis_settings=RedisSettings(namespace={broker.keys.ns!r}))
job = Queue("default", broker).enqueue("tests.jobfuncs:add", 1, 2)
assert Worker(broker=broker).run_until_empty() == {{"completed": 1}}
assert job.result() == 3 and broker.client.hget(broker.keys.job(job.id), "tp") is None
assert not [m for m in sys.modules if m.startswith("opentelemetry.")]
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_supervisor_s_worker_continues_the_trace_and_exports_before_it_exits(
        tmp_path, server, namespace, spans):
    """The job module sets a provider with a batching processor in the supervisor, before
    the fork; its workers export what they buffer as they leave."""
    exported = tmp_path / "spans.jsonl"
    r = Running(tmp_path, server, namespace, workers=1,
                modules='["examples.cpu", "tests.tracefuncs"]',
                env={"JOBVISOR_TEST_SPANS": str(exported), "JOBVISOR_TEST_SPANS_BATCH": "1"})
    try:
        pids = {p.pid for p in r.wait_workers(1)}
        with trace.get_tracer("app").start_as_current_span("request"):
            job = Queue("default", r.broker).enqueue("tests.tracefuncs:traced")
        assert job.result(timeout=20) == "traced"
        assert not exported.exists()  # buffered in the worker: exported when it leaves
    finally:
        assert r.stop() == 0
    (enqueue,) = named(spans, "jobvisor.enqueue ")
    found = wait_until(lambda: exported.exists() and [json.loads(line) for line in
                                                      exported.read_text().splitlines()],
                       timeout=10, what="the worker's spans")
    run = next(s for s in found if s["name"] == "jobvisor.run tests.tracefuncs:traced")
    inside = next(s for s in found if s["name"] == "inside the job")
    assert run["parent_id"] == enqueue.context.span_id
    assert run["trace_id"] == enqueue.context.trace_id
    assert run["pid"] in pids and run["kind"] == "CONSUMER"
    assert run["attributes"]["jobvisor.job.id"] == job.id
    assert run["attributes"]["jobvisor.outcome"] == "completed"
    assert inside["parent_id"] == run["span_id"]
