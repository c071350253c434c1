from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
import redis

import jobs
from jobs import Broker, JobDefaults, RedisSettings
from tests.server import ValkeyServer

_namespaces = itertools.count(1)
_chaos_figures: list[str] = []  # one line per chaos scenario run (tests/chaos/conftest.py)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        _chaos_figures.extend(str(v) for k, v in report.user_properties if k == "chaos")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _chaos_figures:
        terminalreporter.section("chaos figures")
        for line in _chaos_figures:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    srv = ValkeyServer(tmp_path_factory.mktemp("valkey"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def namespace() -> str:
    return f"t{os.getpid()}-{next(_namespaces)}"


def make_broker(server: ValkeyServer, namespace: str, **defaults: object) -> Broker:
    return Broker(
        server.url,
        redis_settings=RedisSettings(namespace=namespace),
        defaults=JobDefaults(**defaults),  # type: ignore[arg-type]
    )


@pytest.fixture
def broker(server: ValkeyServer, namespace: str) -> Iterator[Broker]:
    b = jobs.connect(server.url, redis_settings=RedisSettings(namespace=namespace))
    yield b
    client: redis.Redis = b.client
    keys = list(client.scan_iter(match=f"{b.keys.root}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def raw(broker: Broker) -> redis.Redis:
    return broker.client  # type: ignore[no-any-return]


@pytest.fixture
def sup(tmp_path, server, namespace):
    """Start supervisors with ``sup(workers=2, extra="...")``; all are stopped afterwards."""
    from tests.procs import supervisors

    yield from supervisors(tmp_path, server, namespace)
