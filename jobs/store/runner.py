"""Running Lua scripts on the hot path with as little client overhead as possible.

redis-py's command layer costs about three times the round trip itself here
(measured: 3,300 PING/s through ``Redis.ping`` vs 10,000/s on a bare connection).
A ``ScriptRunner`` keeps one redis-py ``Connection`` per thread and speaks EVALSHA on
it directly, reloading a script the server forgot (restart, SCRIPT FLUSH) and
reconnecting after a dropped connection.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from hiredis import pack_command  # redis-py's packer checks each argument first
from redis.commands.core import Script
from redis.exceptions import InvalidResponse, NoScriptError

_RECONNECT_PAUSE = (0.05, 0.2, 0.5)


class ScriptRunner:
    """Scripts on a connection of their own: one per thread, or, for a client whose pool
    is bounded (``BlockingConnectionPool``: supervisors and their workers), one for the
    whole process, taken in turn, so a process holds at most its pool's bound plus one."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._local = threading.local()
        bounded = isinstance(self._pool, redis.BlockingConnectionPool)
        self._shared: _Shared | None = _Shared() if bounded else None

    def _connection(self) -> Any:
        shared = self._shared
        if shared is not None:  # made anew in a forked child (see _on_connection)
            if shared.conn is None:
                shared.conn = self._pool.make_connection()
            return shared.conn
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.conn = self._pool.make_connection()
            local.pid = os.getpid()
        return local.conn

    def run(self, script: Script, keys: Sequence[str], args: Sequence[Any], retry: bool = True,
            resend_flag: int | None = None) -> Any:
        """EVALSHA ``script``; with ``retry``, resend after a lost connection (idempotent
        scripts only). ``resend_flag``: the index of an argument set to "1" in a resend,
        so a script that must recognise a replay (claims) looks only then."""
        sent = [False]

        def call(conn: Any) -> Any:
            given = args
            if sent[0] and resend_flag is not None:
                given = as_resend(args, resend_flag)
            sent[0] = True
            return self._eval(conn, script, keys, given)

        return self._on_connection(call, retry)

    def run_after(self, before: Sequence[tuple[Any, ...]], script: Script, message: Packed,
                  answered: Callable[[list[Any]], None] | None) -> Any:
        """``run``, with the commands ``before`` sent ahead of the script in the same write
        (their replies are not needed: writes that may ride along with the hot call).
        ``message`` is the script's EVALSHA, packed by the caller (the hot call packs
        what stays the same from one call to the next only once).

        ``answered`` is told, as soon as they are read, the reply to each of them (an error
        as an exception object), even when the script then fails; it is not told at all
        when the connection broke before every one of them was answered.
        """
        return self._behind(before, script, message, answered)[1]

    def wait_then_run(self, wait: tuple[Any, ...], script: Script, keys: list[str],
                      args: list[Any], resend_flag: int) -> Any:
        """Send a blocking ``wait`` command and EVALSHA ``script`` behind it in one write.

        The server runs the script the moment the wait returns (woken or timed out), so a
        woken worker's claim costs no round trip of its own.
        """
        replies, reply = self._behind([wait], script,
                                      Packed.whole(script, keys, args, resend_flag), None)
        if replies and isinstance(replies[0], Exception) and reply is None:
            raise replies[0]  # refused, and nothing taken: the refused wait is the news
        return reply

    def _behind(self, ahead: Sequence[tuple[Any, ...]], script: Script, message: Packed,
                answered: Callable[[list[Any]], None] | None,
                ) -> tuple[list[Any], Any]:
        """The script's ``message`` behind the commands ``ahead``, all in one write.

        Returns the reply to each command ahead (an error as an exception object), and the
        script's reply; ``answered`` gets the same list as soon as it is complete. A resend
        after a lost connection runs the script alone, flagged as a resend (and no command
        ahead is answered).
        """
        sent = [False]
        replies: list[Any] = []

        def call(conn: Any) -> Any:
            if sent[0]:
                return self._send(conn, script, message.resend())
            sent[0] = True
            conn.send_packed_command([*(pack_command(c) for c in ahead), message.first])
            for _ in ahead:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)  # the script's reply is still to be read
            if answered is not None:
                answered(list(replies))
            try:
                return conn.read_response()
            except NoScriptError:  # the script did not run: load it and run it now
                return self._send(conn, script, message.first)

        reply = self._on_connection(call, retry=True)
        if sent[0] and len(replies) < len(ahead):
            replies.clear()  # cut off mid-way and resent: what ran ahead is not known
        return replies, reply

    def command(self, *args: Any) -> Any:
        """Any command on this thread's connection (used for the workers' blocking wait)."""
        def send(conn: Any) -> Any:
            conn.send_command(*args)
            return conn.read_response()

        return self._on_connection(send, retry=False)

    def _on_connection(self, call: Any, retry: bool) -> Any:
        shared = self._shared
        if shared is None:
            return self._call(call, retry)
        if shared.made_in != os.getpid():
            # A process forked from this one (job code's multiprocessing) may have copied
            # the lock held by another thread: it gets a lock (and connection) of its own.
            shared = self._shared = _Shared()
        with shared.turn:
            return self._call(call, retry)

    def _call(self, call: Any, retry: bool) -> Any:
        attempts = len(_RECONNECT_PAUSE) if retry else 0
        for attempt in range(attempts + 1):
            conn = self._connection()
            # A connect that fails was already retried inside redis-py (the client's retry
            # policy): only a connection that was open is worth a fresh one here.
            was_connected = getattr(conn, "_sock", None) is not None
            try:
                return call(conn)
            except (redis.ConnectionError, redis.TimeoutError, InvalidResponse):
                # Also a reply that is not Redis (something else answered, or the stream
                # is out of step): that connection is never used again.
                conn.disconnect()
                if attempt >= attempts or not was_connected:
                    raise
                time.sleep(_RECONNECT_PAUSE[attempt])
            except redis.RedisError:
                raise  # an error reply: the connection is still in step
            except BaseException:
                conn.disconnect()  # interrupted mid-reply (e.g. a stop signal): start clean
                raise
        raise AssertionError("unreachable")

    @staticmethod
    def _eval(conn: Any, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return ScriptRunner._send(conn, script, pack_command(
            ("EVALSHA", script.sha, len(keys), *keys, *args)))

    @staticmethod
    def _send(conn: Any, script: Script, command: bytes) -> Any:
        """Send a packed EVALSHA of ``script``; load the script if the server lacks it."""
        conn.send_packed_command([command])
        try:
            return conn.read_response()
        except NoScriptError:
            conn.send_command("SCRIPT", "LOAD", script.script)
            conn.read_response()
            conn.send_packed_command([command])
            return conn.read_response()


class _Shared:
    """A shared runner's connection, taken in turn, and the process it belongs to."""

    def __init__(self) -> None:
        self.turn = threading.RLock()
        self.made_in = os.getpid()
        self.conn: Any = None


class Packed:
    """An EVALSHA packed for the wire, and how to pack it again flagged as a resend."""

    __slots__ = ("first", "resend")

    def __init__(self, first: bytes, resend: Callable[[], bytes]) -> None:
        self.first = first
        self.resend = resend

    @staticmethod
    def whole(script: Script, keys: Sequence[str], args: Sequence[Any],
              resend_flag: int) -> Packed:
        command = ("EVALSHA", script.sha, len(keys), *keys)
        return Packed(pack_command((*command, *args)),
                      lambda: pack_command((*command, *as_resend(args, resend_flag))))


def items(values: Sequence[Any]) -> bytes:
    """``values`` packed as a command is, without the count in front: a piece of a command
    whose pieces are packed apart (see ``joined``)."""
    packed: bytes = pack_command(tuple(values))
    return packed[packed.index(b"\n") + 1:]


def joined(count: int, *pieces: bytes) -> bytes:
    """One command of ``count`` values from pieces ``items`` packed."""
    return b"*%d\r\n%b" % (count, b"".join(pieces))


def as_resend(args: Sequence[Any], flag: int) -> list[Any]:
    """The arguments with the one at ``flag`` set to "1": this call may have run before."""
    return [*args[:flag], "1", *args[flag + 1:]]
