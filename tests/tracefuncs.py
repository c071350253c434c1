"""Job functions for the tracing tests. Imported by a supervisor whose environment names
a file in JOBVISOR_TEST_SPANS, this module sets a tracer provider there (before the
fork, as an application's job module would) whose exporter appends each finished span
to that file as a JSON line, from whichever process ends it: at once, or, with
JOBVISOR_TEST_SPANS_BATCH set, from a batching processor that exports only when flushed
(a worker leaving) within the test's time."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from jobs import job


class FileExporter(SpanExporter):
    """One JSON line per span, appended (one write per span, so processes do not mix)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(as_dict(s)) + "\n" for s in spans)
        with open(self.path, "a") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS


def as_dict(span: ReadableSpan) -> dict[str, object]:
    ctx = span.get_span_context()
    assert ctx is not None
    return {"name": span.name, "trace_id": ctx.trace_id, "span_id": ctx.span_id,
            "parent_id": span.parent.span_id if span.parent else None,
            "kind": span.kind.name, "status": span.status.status_code.name,
            "attributes": dict(span.attributes or {}), "pid": os.getpid()}


if os.environ.get("JOBVISOR_TEST_SPANS"):
    exporter = FileExporter(os.environ["JOBVISOR_TEST_SPANS"])
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=600_000)
        if os.environ.get("JOBVISOR_TEST_SPANS_BATCH") else SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


@job(max_attempts=2)
def traced(fail: bool = False) -> str:
    """Makes a span of its own (a child of the run's span), then returns or raises."""
    with trace.get_tracer(__name__).start_as_current_span("inside the job"):
        if fail:
            raise ValueError("asked to fail")
    return "traced"
