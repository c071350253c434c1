"""The dashboard and its HTTP API on a Redis/Valkey Cluster: the dashboard's tests
(``tests/test_dashboard.py``: pages in a real headless Chromium, the API, sign-in, CSRF,
the event stream) run unchanged against a namespace on a real 3+3 cluster on loopback,
their ``server`` being the cluster's URL."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

import tests.test_dashboard
from tests.cluster import ValkeyCluster
from tests.test_dashboard import browser, dash, empty, lib, ns  # noqa: F401  (their fixtures)

# Starts a standalone server of its own to stop it: nothing of the cluster in it.
OWN_SERVER = {"test_the_dashboard_s_readyz_follows_a_redis_outage"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    cluster = ValkeyCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    yield SimpleNamespace(url=cluster.url)
    cluster.stop()


globals().update({
    f"{name}_on_cluster": fn
    for name, fn in inspect.getmembers(tests.test_dashboard, inspect.isfunction)
    if name.startswith("test_") and fn.__module__ == tests.test_dashboard.__name__
    and name not in OWN_SERVER})
