"""How handlers declare their path and query parameters (one spelling for all of them)."""

from __future__ import annotations

from typing import Annotated

from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter

from jobs.query.groups import DEFAULT_SCAN, MAX_SCAN
from jobs.store.broker import Broker

BrokerDep = NamedDependency[Broker]  # the app's broker (state.broker)
InPath = FromPath[str]
Query = FromQuery[str | None]
Seconds = Annotated[float | None, QueryParameter(ge=0, description="seconds")]
StateName = Annotated[str, QueryParameter(
    name="state", description="queued, scheduled, waiting, active, completed, dead or canceled")]
GroupScan = Annotated[int, QueryParameter(
    ge=1, le=MAX_SCAN, description=f"group the newest this many dead jobs ({DEFAULT_SCAN:,} "
                                   "take about 0.2 s)")]
