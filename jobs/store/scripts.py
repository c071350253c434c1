"""Lua scripts: read once from ``jobs/store/lua``, registered once per client, called by SHA."""

from __future__ import annotations

import re
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
    "claimed_by",
)


_DEFINITION = re.compile(r"^local (?:function )?([A-Za-z_]\w*)", re.MULTILINE)
_WORD = re.compile(r"[A-Za-z_]\w*")


@cache
def source(name: str) -> str:
    """The script's text with the shared helpers it uses in front of it.

    Each helper a script carries is created anew on every call (Lua closures), so only
    the helpers the script reaches, directly or through other helpers, are included.
    """
    lua = resources.files("jobs.store") / "lua"
    body = (lua / f"{name}.lua").read_text()
    return "".join(used_helpers((lua / "_lib.lua").read_text(), body)) + body


def used_helpers(lib: str, body: str) -> list[str]:
    """The top-level definitions of ``lib`` that ``body`` needs, in their original order."""
    starts = [m.start() for m in _DEFINITION.finditer(lib)]
    chunks: dict[str, str] = {}
    for i, start in enumerate(starts):
        # A definition runs to the next one; its leading comments stay with the next.
        end = starts[i + 1] if i + 1 < len(starts) else len(lib)
        text = lib[start:end]
        match = _DEFINITION.match(text)
        assert match is not None
        chunks[match.group(1)] = text
    needed: set[str] = set()
    todo = [w for w in _WORD.findall(body) if w in chunks]
    while todo:
        word = todo.pop()
        if word not in needed:
            needed.add(word)
            todo += [w for w in _WORD.findall(chunks[word]) if w in chunks and w not in needed]
    return [text for defined, text in chunks.items() if defined in needed]


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
        self.claimed_by = self._load(client, "claimed_by")

    @staticmethod
    def _load(client: redis.Redis, name: str) -> Script:
        return client.register_script(source(name))
