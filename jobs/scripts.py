"""Lua scripts: read once from ``jobs/lua``, registered once per client, called by SHA."""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

SCRIPT_NAMES = (
    "enqueue",
    "claim",
    "complete",
    "fail",
    "release",
    "renew",
    "promote",
    "expired",
    "cancel",
    "requeue",
    "purge",
    "watch",
    "resume",
    "progress",
    "event",
    "finish_claim",
    "trim",
    "limits",
    "age",
)


@cache
def source(name: str) -> str:
    """The script's text with the shared helpers in front of it."""
    lua = resources.files("jobs") / "lua"
    return (lua / "_lib.lua").read_text() + (lua / f"{name}.lua").read_text()


class Scripts:
    """One ``Script`` per operation; redis-py runs EVALSHA and reloads after a server restart."""

    def __init__(self, client: redis.Redis) -> None:
        self.enqueue = self._load(client, "enqueue")
        self.claim = self._load(client, "claim")
        self.complete = self._load(client, "complete")
        self.fail = self._load(client, "fail")
        self.release = self._load(client, "release")
        self.renew = self._load(client, "renew")
        self.promote = self._load(client, "promote")
        self.expired = self._load(client, "expired")
        self.cancel = self._load(client, "cancel")
        self.requeue = self._load(client, "requeue")
        self.purge = self._load(client, "purge")
        self.watch = self._load(client, "watch")
        self.resume = self._load(client, "resume")
        self.progress = self._load(client, "progress")
        self.event = self._load(client, "event")
        self.finish_claim = self._load(client, "finish_claim")
        self.trim = self._load(client, "trim")
        self.limits = self._load(client, "limits")
        self.age = self._load(client, "age")

    @staticmethod
    def _load(client: redis.Redis, name: str) -> Script:
        return client.register_script(source(name))
