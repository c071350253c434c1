"""OpenTelemetry spans for enqueues and runs: the optional extra ``jobvisor[otel]``.

With ``opentelemetry-api`` installed and a tracer provider set by the application
(``trace.set_tracer_provider(...)``), every enqueue opens a ``jobvisor.enqueue
<function>`` span (a child of the span current at the call) and stores its W3C trace
context in the job's record (field ``tp``, beside the spec: a worker that does not know
the field runs the job all the same). Each run of the job, on a worker or inline, opens
a ``jobvisor.run <function>`` span whose parent is that context, current while the
function runs, so the spans the job makes nest under it.

Without the package the import below fails once, at module load, and every entry point
is a test of one module global. With the package but no provider set, an enqueue looks
for one per call (about a microsecond); a worker looks once, when it starts
(``Worker._traced``), so its loop per job is the same as without the package.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec

from jobs.options import Prepared
from jobs.policy import Outcome, Verdict
from jobs.records import Claimed

try:
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the extra is not installed: tracing is off and costs nothing
    _trace = None  # type: ignore[assignment]

AVAILABLE = _trace is not None

log = logging.getLogger(__name__)

T = TypeVar("T")
SCOPE = "jobvisor"
OUTCOMES = {Verdict.COMPLETED: "completed", Verdict.RETRY: "retried", Verdict.DEAD: "dead"}
FLUSH_MS = 5000  # the longest a worker leaving waits for its spans to be exported

_json = msgspec.json.Encoder()
_carrier = msgspec.json.Decoder(dict[str, str])
_cached: tuple[Any, Any] = (None, None)  # (provider, its tracer)
_looked = False  # the first look asked the API, which also reads the environment


def tracer() -> Any:
    """The application's tracer, or None when the package is absent or no provider is
    set (spans would record nothing, and their context would carry nothing)."""
    global _cached, _looked
    if _trace is None:
        return None
    # After the first look, no provider set since is one attribute away: the API's own
    # getter reads os.environ on every call, a tenth of an enqueue's Python. A provider
    # named by OTEL_PYTHON_TRACER_PROVIDER is loaded and set by the first look, so that
    # variable counts when set before the process's first enqueue or run.
    if _looked and getattr(_trace, "_TRACER_PROVIDER", False) is None:
        return None
    provider = _trace.get_tracer_provider()
    _looked = True  # only once the API answered: a provider failing to load raises again
    if isinstance(provider, _trace.ProxyTracerProvider | _trace.NoOpTracerProvider):
        return None
    if _cached[0] is not provider:
        _cached = (provider, provider.get_tracer(SCOPE))
    return _cached[1]


def enqueue(prepared: Sequence[Prepared], write: Callable[[list[Prepared]], T]) -> T:
    """``write(prepared)``, each job under an enqueue span whose context it carries."""
    t = tracer()
    if t is None:
        return write(list(prepared))
    kind = _trace.SpanKind.PRODUCER
    spans = [t.start_span(f"jobvisor.enqueue {p.function}", kind=kind, attributes={
        "jobvisor.job.id": p.id, "jobvisor.queue": p.queue, "jobvisor.function": p.function,
        "messaging.system": SCOPE, "messaging.destination.name": p.queue,
        "messaging.message.id": p.id}) for p in prepared]
    carried = [_carry(p, span) for p, span in zip(prepared, spans, strict=True)]
    try:
        return write(carried)
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(_trace.Status(_trace.StatusCode.ERROR, str(exc)[:200]))
        raise
    finally:
        for span in spans:
            span.end()


def _carry(p: Prepared, span: Any) -> Prepared:
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, _trace.set_span_in_context(span))
    if not carrier:
        return p
    return msgspec.structs.replace(p, extra={**p.extra, "tp": _json.encode(carrier).decode()})


def run(job: Claimed, attempt: Callable[[], tuple[Outcome, T]]) -> tuple[Outcome, T]:
    """``attempt()`` under a run span, the child of the job's enqueue span when it has one
    (else of the current span); the outcome goes in its attributes and status."""
    t = tracer()
    if t is None:
        return attempt()
    parent = _parent(job.trace)
    name = job.spec.function if job.spec else "?"
    with t.start_as_current_span(
            f"jobvisor.run {name}", context=parent, kind=_trace.SpanKind.CONSUMER,
            record_exception=False, set_status_on_exception=False,
            attributes={"jobvisor.job.id": job.id, "jobvisor.queue": job.queue,
                        "jobvisor.function": name, "jobvisor.attempt": job.attempt,
                        "messaging.system": SCOPE, "messaging.destination.name": job.queue,
                        "messaging.message.id": job.id}) as span:
        result = attempt()
        outcome = result[0]
        span.set_attribute("jobvisor.outcome", OUTCOMES[outcome.verdict])
        if outcome.error is not None:
            if outcome.exception is not None:
                span.record_exception(outcome.exception)
            span.set_status(_trace.Status(
                _trace.StatusCode.ERROR,
                f"{outcome.error.type}: {outcome.error.message}"[:200]))
    return result


def _parent(raw: bytes | None) -> Any:
    """The context a job's record carries, or None (the current context) without one."""
    if not raw:
        return None
    try:
        return TraceContextTextMapPropagator().extract(_carrier.decode(raw))
    except (msgspec.DecodeError, msgspec.ValidationError):
        log.warning("unreadable trace context %r: the run span starts a trace of its own",
                    raw[:100])
        return None


def flush() -> None:
    """Export the spans a provider still buffers (a worker leaves with ``os._exit``,
    which runs no exit handler of the SDK)."""
    if not AVAILABLE:
        return
    force = getattr(_trace.get_tracer_provider(), "force_flush", None)
    if force is not None:
        try:
            force(FLUSH_MS)
        except Exception as exc:  # an exporter's failure must not crash a leaving worker
            log.warning("spans not exported: %s", exc)
