"""What every part of the ``Broker`` works with, declared once for its mixins."""

from __future__ import annotations

from typing import Any

from jobs.settings import JobDefaults, RedisSettings
from jobs.store.keys import Keys
from jobs.store.runner import ScriptRunner
from jobs.store.scripts import Scripts


class BrokerState:
    """Set by ``Broker.__init__``: the client, its scripts, key names and defaults."""

    url: str
    client: Any  # redis-py's reply types are unions converted at each call site
    keys: Keys
    prefix: str
    events_len: int
    scripts: Scripts
    runner: ScriptRunner
    defaults: JobDefaults
    settings: RedisSettings
