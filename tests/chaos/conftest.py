"""Fixtures of the chaos suite, and its ``--duration`` option.

Without ``--duration`` each scenario runs its short CI mode (a few seconds of load and
one round of each fault). ``pytest -n 0 tests/chaos --duration 600`` is the soak run, by
hand: every scenario keeps its workload and faults going for that many seconds. Set
``JOBVISOR_CHAOS_REPORT=path.jsonl`` to collect one JSON line of figures per scenario.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs import Broker, RedisSettings
from tests.chaos.ledger import RESULTS, Ledger, summary
from tests.chaos.rig import PrivateServer, Supervisor
from tests.chaos.workload import STARTED

CI_DURATION = 1.0
HERE = Path(__file__).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--duration", type=float, default=None, metavar="SECONDS",
                     help="chaos suite: seconds of load and faults per scenario "
                          f"(default: a {CI_DURATION:g} s CI run; 600 for a soak)")


def _duration(config: pytest.Config) -> float:
    value = config.getoption("--duration", default=None)
    return float(value) if value else CI_DURATION


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Scenarios last about their duration plus start-up, lease expiries and the drain.
    limit = 120.0 if _duration(config) <= CI_DURATION else 3 * _duration(config) + 300
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.timeout(limit))


@pytest.fixture(autouse=True)
def _figures_in_the_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each scenario's figures travel with its test report (from a pytest-xdist worker
    too), for the summary at the end of the run (tests/conftest.py)."""
    first = len(RESULTS)
    yield
    for line in RESULTS[first:]:
        request.node.user_properties.append(("chaos", summary(line)))


@pytest.fixture
def duration(request: pytest.FixtureRequest) -> float:
    """Seconds of load and faults for this scenario."""
    return _duration(request.config)


@pytest.fixture
def soak(duration: float) -> bool:
    return duration > CI_DURATION


@pytest.fixture
def ledger(server, namespace: str) -> Iterator[Ledger]:
    """The scenario's ledger, on the session server (no scenario faults that one)."""
    book = Ledger(server.url, f"{namespace}:ledger")
    yield book
    book.clear()


@pytest.fixture
def job_broker(server, namespace: str) -> Iterator[Broker]:
    """A broker on the session server for the scenario's namespace; its keys go after."""
    broker = Broker(server.url, redis_settings=RedisSettings(namespace=namespace))
    yield broker
    keys = list(broker.client.scan_iter(match=f"{namespace}:*", count=5000))
    for i in range(0, len(keys), 5000):
        broker.client.delete(*keys[i : i + 5000])
    broker.client.close()


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[Callable[..., PrivateServer]]:
    """``private_server(*extra_args)``: a job server of the test's own; always stopped."""
    started: list[PrivateServer] = []
    names = itertools.count()

    def start(*extra: str) -> PrivateServer:
        srv = PrivateServer(tmp_path / f"valkey{next(names)}", *extra)
        started.append(srv)
        srv.start()
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def cluster(tmp_path: Path, namespace: str) -> Iterator[Callable[..., Supervisor]]:
    """``cluster(url, workers=2, ...)``: a started supervisor with booted workers; every
    supervisor is stopped (SIGTERM, then SIGKILL by pid) afterwards."""
    made: list[Supervisor] = []

    def start(url: str, *, wait: bool = True, **kw: Any) -> Supervisor:
        sup = Supervisor(tmp_path / f"sup{len(made)}", url, namespace, **kw)
        made.append(sup)
        sup.start()
        if wait:
            sup.wait_ready(kw.get("workers", 2))
        return sup

    yield start
    for sup in made:
        sup.stop()


@pytest.fixture(autouse=True)
def _no_producer_left() -> Iterator[None]:
    """A producer still running after its test (one that failed before stopping it) is
    stopped, so it cannot disturb the tests after it."""
    yield
    while STARTED:
        STARTED.pop().abandon()
