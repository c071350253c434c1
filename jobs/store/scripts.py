"""Lua scripts: read once from ``jobs/store/lua``, registered once per client, called by SHA.

Redis scripts cannot include one another, so a script is composed from text: the small
helpers of ``_lib.lua`` and the operations of the parts it lists (``_<part>.lua``) that
it uses, then its own file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

from jobs.store.layouts import PARTS, SCRIPTS

_DEFINITION = re.compile(r"^local (?:function )?([A-Za-z_]\w*)", re.MULTILINE)
_WORD = re.compile(r"[A-Za-z_]\w*")
_COMMENT = re.compile(r"--[^\n]*")


@cache
def source(name: str) -> str:
    """The script's text with the shared helpers and part operations it uses in front.

    Each helper a script carries is created anew on every call (Lua closures), so only
    the helpers the script reaches, directly or through other helpers, are included.
    """
    lua = resources.files("jobs.store") / "lua"
    body = (lua / f"{name}.lua").read_text()
    listed = _with_their_parts(SCRIPTS[name].parts)
    libs = [(lua / "_lib.lua").read_text()]
    libs += [(lua / f"_{part}.lua").read_text() for part in PARTS if part in listed]
    helpers = used_helpers(libs, body)
    for part in PARTS:
        if part not in listed:
            unlisted = _words("".join(helpers) + body) & set(_definitions(
                (lua / f"_{part}.lua").read_text()))
            if unlisted:
                raise ValueError(f"{name}.lua uses {', '.join(sorted(unlisted))} of "
                                 f"_{part}.lua: list {part!r} among its parts in "
                                 "jobs/store/layouts.py")
    return "".join(helpers) + body


def _with_their_parts(parts: Sequence[str]) -> set[str]:
    found: set[str] = set()
    todo = list(parts)
    while todo:
        part = todo.pop()
        if part not in found:
            found.add(part)
            todo += PARTS[part]
    return found


def used_helpers(libs: str | Sequence[str], body: str) -> list[str]:
    """The top-level definitions of ``libs`` that ``body`` needs, in their original order."""
    chunks: dict[str, str] = {}
    for lib in [libs] if isinstance(libs, str) else libs:
        for defined, text in _definitions(lib).items():
            if defined in chunks:
                raise ValueError(f"{defined} is defined twice in the Lua helpers and parts")
            chunks[defined] = text
    needed: set[str] = set()
    todo = [w for w in _words(body) if w in chunks]
    while todo:
        word = todo.pop()
        if word not in needed:
            needed.add(word)
            todo += [w for w in _words(chunks[word]) if w in chunks and w not in needed]
    return [text for defined, text in chunks.items() if defined in needed]


def _definitions(lib: str) -> dict[str, str]:
    """Each top-level definition of ``lib`` with its text; the text before the first
    (the file's header) belongs to none."""
    starts = [m.start() for m in _DEFINITION.finditer(lib)]
    chunks: dict[str, str] = {}
    for i, start in enumerate(starts):
        # A definition runs to the next one; its leading comments stay with the next.
        end = starts[i + 1] if i + 1 < len(starts) else len(lib)
        text = lib[start:end]
        match = _DEFINITION.match(text)
        assert match is not None
        chunks[match.group(1)] = text
    return chunks


def _words(lua: str) -> set[str]:
    """The names ``lua`` mentions outside its comments."""
    return set(_WORD.findall(_COMMENT.sub("", lua)))


class Scripts:
    """One ``Script`` per script of ``jobs.store.layouts``, as an attribute of its name
    (``scripts.claim``); redis-py runs EVALSHA and reloads a script the server forgot."""

    def __init__(self, client: redis.Redis) -> None:
        for name in SCRIPTS:
            setattr(self, name, client.register_script(source(name)))

    def __getattr__(self, name: str) -> Script:
        """Only for names that are not scripts (the scripts are instance attributes)."""
        raise AttributeError(f"no Lua script {name!r} in jobs.store.layouts")
