"""The supervisor's HTTP endpoint on ``[metrics] address``: ``/metrics`` (Prometheus),
``/healthz`` (the supervisor answers) and ``/readyz`` (Redis answers, this supervisor's
entry in Redis is live, and the ``[health]`` thresholds).

The standard library's threaded WSGI server, one thread per request, away from the
supervisor's loop: a ``/readyz`` waiting on a stalled Redis holds only its own thread,
for about ``[health] redis_timeout`` (``jobs.health`` uses a connection of its own).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from jobs import Broker
from jobs.health import LIVE_BODY, check_health, response
from supervisor.config import HealthSettings
from supervisor.integrations.metrics import JobvisorCollector, LocalFigures

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
REASONS = {200: "200 OK", 404: "404 Not Found", 405: "405 Method Not Allowed",
           503: "503 Service Unavailable"}


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a request in flight never holds up the supervisor's exit


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to the debug log, not to stderr (probes come every few seconds)."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class Routes:
    """The WSGI app: three paths, each a GET; the health settings are read per request,
    so a reload's new thresholds apply at once."""

    def __init__(self, broker: Broker, metrics: WSGIApp,
                 health: Callable[[], HealthSettings], ident: str) -> None:
        self.broker = broker
        self.metrics = metrics
        self.health = health
        self.ident = ident  # /readyz: this supervisor's entry is live

    def __call__(self, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self.metrics(environ, start)
        if path not in ("/healthz", "/readyz"):
            return _reply(start, 404, b'{"error":"not found: try /metrics, /healthz or /readyz"}')
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            return _reply(start, 405, b'{"error":"use GET"}', [("Allow", "GET, HEAD")])
        if path == "/healthz":
            status, body = 200, LIVE_BODY
        else:
            s = self.health()
            status, body = response(check_health(self.broker, max_lag=s.max_lag,
                                                 max_dead=s.max_dead,
                                                 redis_timeout=s.redis_timeout,
                                                 supervisor=self.ident))
        return _reply(start, status, b"" if environ["REQUEST_METHOD"] == "HEAD" else body)


def _reply(start: StartResponse, status: int, body: bytes,
           extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    start(REASONS[status], [("Content-Type", "application/json"),
                            ("Cache-Control", "no-store"), *(extra or [])])
    return [body]


def _server_class(family: socket.AddressFamily) -> type[_Server]:
    class Server(_Server):
        address_family = family  # WSGIServer binds IPv4 unless told

    return Server


def serve(address: str, broker: Broker, local: LocalFigures,
          health: Callable[[], HealthSettings], ident: str,
          max_functions: Callable[[], int]) -> WSGIServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (``[::1]:port``
    for IPv6) from a daemon thread; raises ``OSError`` when the address cannot be bound.
    ``ident`` is this supervisor's id: /readyz checks that its own entry is live;
    ``max_functions`` bounds the function labels (``[metrics] max_functions``)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    registry = CollectorRegistry()
    registry.register(JobvisorCollector(broker, local, max_functions))
    app = Routes(broker, make_wsgi_app(registry), health, ident)
    family = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM,
                                flags=socket.AI_PASSIVE)[0][0]
    server = make_server(host, int(port), app, _server_class(family), _QuietHandler)
    threading.Thread(target=server.serve_forever, name="jobvisor-http", daemon=True).start()
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    log.info("serving http://%s:%s/metrics, /healthz and /readyz", shown, port)
    return server
