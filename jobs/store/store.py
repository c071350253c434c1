"""One namespace's connection: the state every part of the store works with."""

from __future__ import annotations

from typing import Any, Final

from jobs.encryption.sealer import Sealer
from jobs.settings import JobDefaults, RedisSettings
from jobs.store.keys import Keys
from jobs.store.runner import ScriptRunner
from jobs.store.scripts import Scripts
from jobs.store.slot_owner import is_cluster_url


class Store:
    """A Redis client, its loaded scripts, key names, defaults and encryption keys for
    one namespace.

    Set once: a ``Broker`` is one (its hot path reads these as its own attributes, one
    lookup each), and the parts it is built from (``broker.jobs``,
    ``broker.maintenance``) hold it.
    """

    def __init__(self, url: str, client: Any, settings: RedisSettings,
                 defaults: JobDefaults, sealer: Sealer | None = None) -> None:
        self.url: Final = url
        # Typed as Any: redis-py's reply types are unions we convert at each call site.
        self.client: Final[Any] = client
        self.settings: Final = settings
        self.defaults: Final = defaults
        self.sealer: Final = sealer or Sealer()
        self.keys: Final = Keys(settings.namespace, cluster=is_cluster_url(url))
        self.prefix: Final = self.keys.job("")
        self.events_len: Final = settings.events_max_len
        self.scripts: Final = Scripts(client)
        self.runner: Final = ScriptRunner(client)
