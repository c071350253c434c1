"""Each Lua script's header binds the names its description in ``jobs.store.layouts`` lists,
in the same order, so an argument moved on one side only fails here; past its header a
script reaches its arguments by those names alone."""

from __future__ import annotations

import re
import struct
from importlib import resources

import pytest
from redis.commands.core import Script

from jobs import Broker, Queue
from jobs.options import Prepared
from jobs.records import AttemptError, Claimed, ErrorKind, encoder
from jobs.store.completions import Completion
from jobs.store.layouts import (
    CLAIM,
    COMPLETE,
    ENQUEUE,
    ENQUEUE_ONE,
    FAIL,
    FINISH_BATCH,
    FINISH_CLAIM,
    SCRIPTS,
    Layout,
)
from jobs.store.scripts import _definitions

LUA = resources.files("jobs.store") / "lua"
# local job = KEYS[1]    -- ...
_FIXED = re.compile(r"^local (\w+) = (KEYS|ARGV)\[(\d+)\]\s*(?:--.*)?$")
# local first_queue_key = 3  -- KEYS[3..]: per queue: queued, active, wake_list
_GROUP = re.compile(r"^local (\w+) = (\d+)\s+-- (KEYS|ARGV)\[(\d+)\.\.\]: per (\w+): (.+)$")
_POSITION = re.compile(r"\b(KEYS|ARGV)\[\d+\]")


class Header:
    """What a script's header says: for KEYS and for ARGV, the fixed names in order and the
    repeated group (its first index, what it is per, its names)."""

    def __init__(self, text: str) -> None:
        self.fixed: dict[str, list[str]] = {"KEYS": [], "ARGV": []}
        self.group: dict[str, tuple[int, str, list[str]]] = {}
        self.locals: list[str] = []
        self.body: list[str] = []
        for line in text.splitlines():
            fixed, group = _FIXED.match(line), _GROUP.match(line)
            if fixed:
                name, table, index = fixed.group(1), fixed.group(2), int(fixed.group(3))
                assert index == len(self.fixed[table]) + 1, f"{line!r}: out of order"
                assert table not in self.group, f"{line!r}: after the group"
                self.fixed[table].append(name)
                self.locals.append(name)
            elif group:
                local, start, table, first = group.group(1, 2, 3, 4)
                assert start == first, f"{line!r}: the local is not the group's first index"
                assert int(start) == len(self.fixed[table]) + 1, f"{line!r}: not after the fixed"
                assert table not in self.group, f"{line!r}: a second group"
                names = [n.strip() for n in group.group(6).split(",")]
                self.group[table] = (int(start), group.group(5), names)
                self.locals.append(local)
            else:
                self.body.append(line)


def _expected(names: tuple[str, ...], each: str, group: tuple[str, ...],
              ) -> tuple[list[str], tuple[str, list[str]] | None]:
    return list(names), ((each, list(group)) if group else None)


@pytest.mark.parametrize("layout", SCRIPTS.values(), ids=list(SCRIPTS))
def test_each_script_header_binds_the_names_of_its_layout(layout: Layout):
    header = Header((LUA / f"{layout.name}.lua").read_text())
    for table, names, group in (("KEYS", layout.key_names, layout.each_key),
                                ("ARGV", layout.arg_names, layout.each_arg)):
        found = header.group.get(table)
        assert (header.fixed[table], found and (found[1], found[2])) == _expected(
            names.names, layout.each, group.names), f"{layout.name}.lua {table}"


@pytest.mark.parametrize("layout", SCRIPTS.values(), ids=list(SCRIPTS))
def test_past_its_header_a_script_uses_names_not_positions(layout: Layout):
    header = Header((LUA / f"{layout.name}.lua").read_text())
    positional = [line for line in header.body
                  if _POSITION.search(line) and not line.lstrip().startswith("--")]
    assert positional == []
    assert len(set(header.locals)) == len(header.locals)
    helpers = set()
    for path in LUA.iterdir():
        if path.name.startswith("_"):
            helpers |= set(_definitions(path.read_text()))
    assert not set(header.locals) & helpers  # a local would hide the helper of its name


def test_shared_operations_get_their_arguments_as_parameters():
    for path in LUA.iterdir():
        if path.name.startswith("_"):
            code = "\n".join(line.split("--")[0] for line in path.read_text().splitlines())
            assert "KEYS" not in code and "ARGV" not in code, path.name


def test_a_caller_names_every_argument_and_no_other():
    args = dict(id="j", token="t", result=b"r", result_ttl_ms=1, duration_ms=2, new_token="n",
                resent="0", queue="q", prefix="p:job:", events_len=0, lease_ms=3)
    assert FINISH_CLAIM.args(["a", "b"], **args) == [*args.values(), "a", "b"]
    del args["duration_ms"]
    with pytest.raises(TypeError, match=r"missing \['duration_ms'\], unknown none"):
        FINISH_CLAIM.args(**args)
    with pytest.raises(TypeError, match=r"missing \['duration_ms'\], unknown \['duration'\]"):
        FINISH_CLAIM.args(**args, duration=2)
    assert FINISH_CLAIM.resend_flag == 6


def _recording(broker: Broker, reply: str) -> Script:
    """A script that keeps the KEYS and ARGV it is called with, in place of a real one."""
    ns = broker.keys.ns
    return broker.client.register_script(
        f"redis.call('DEL', '{ns}:rec:keys', '{ns}:rec:args')\n"
        f"redis.call('RPUSH', '{ns}:rec:keys', unpack(KEYS))\n"
        f"redis.call('RPUSH', '{ns}:rec:args', unpack(ARGV))\n"
        f"return {reply}")


def _sent(broker: Broker, layout: Layout) -> tuple[dict[str, str], list[str],
                                                    dict[str, bytes], list[bytes]]:
    """What the recording script was sent: named KEYS, the KEYS group, named ARGV, its group."""
    ns = broker.keys.ns
    keys = [k.decode() for k in broker.client.lrange(f"{ns}:rec:keys", 0, -1)]
    args = broker.client.lrange(f"{ns}:rec:args", 0, -1)
    n, m = len(layout.key_names.names), len(layout.arg_names.names)
    return (dict(zip(layout.key_names.names, keys[:n], strict=True)), keys[n:],
            dict(zip(layout.arg_names.names, args[:m], strict=True)), args[m:])


def test_the_hot_calls_send_each_value_under_its_name(broker: Broker):
    """The hot calls write what they send per call in order, not by name (see
    jobs.store.layouts): each value must still land under its name."""
    k, prefix, events_len = broker.keys, broker.prefix.encode(), str(broker.events_len).encode()
    job = Claimed(id="J1", queue="q1", token="T1", spec=None, attempt=1, priority=0, errors=(),
                  enqueued_at=0.0, started_at=0.0)
    queue_keys = [k.queued("q2"), k.active("q2"), k.wake("q2"),
                  k.queued("q3"), k.active("q3"), k.wake("q3")]

    broker.scripts.finish_claim = _recording(broker, "{0, false}")
    for _ in range(2):  # the second call sends what the first one cached
        broker.finish_and_claim(job, b"R", 61.0, 2.5, ["q2", "q3"], "T2", 30.0)
        assert _sent(broker, FINISH_CLAIM) == (
            {"job": k.job("J1"), "done": k.done("J1"), "active": k.active("q1"),
             "completed": k.completed("q1"), "events": k.events(), "paused": k.paused()},
            queue_keys,
            {"id": b"J1", "token": b"T1", "result": b"R", "result_ttl_ms": b"61000",
             "duration_ms": b"2500", "new_token": b"T2", "resent": b"0", "queue": b"q1",
             "prefix": prefix, "events_len": events_len, "lease_ms": b"30000"},
            [b"q2", b"q3"])

    broker.scripts.finish_batch = _recording(broker, "{{}, {}}")
    for resent in (False, True):
        broker.finish_batch([Completion(job, b"R", 61.0, 2.5)], 4, ["q1", "q3"], "T4", 30.0,
                            resent=resent)
        keys, group, args, names = _sent(broker, FINISH_BATCH)
        assert (keys, group, names) == (
            {"paused": k.paused(), "events": k.events()},
            [k.queued("q1"), k.active("q1"), k.wake("q1"),
             k.queued("q3"), k.active("q3"), k.wake("q3")], [b"q1", b"q3"])
        assert args == {"prefix": prefix, "token": b"T4", "lease_ms": b"30000",
                        "events_len": events_len, "resent": b"1" if resent else b"0",
                        "want": b"4", "done": args["done"]}
        # One completion as finish_batch.lua unpacks it: id, token, result, TTL ms, run
        # ms, and the position of its queue among the queues sent.
        assert args["done"] == (b"\x00\x02J1\x00\x02T1\x00\x00\x00\x01R"
                                + struct.pack(">ddH", 61000, 2500, 1))

    broker.scripts.claim = _recording(broker, "nil")
    for resent in (True, False):
        broker.claim(["q2", "q3"], "T3", 30.0, resent=resent)
        assert _sent(broker, CLAIM) == (
            {"paused": k.paused(), "events": k.events()}, queue_keys,
            {"prefix": prefix, "token": b"T3", "lease_ms": b"30000", "events_len": events_len,
             "resent": b"1" if resent else b"0"},
            [b"q2", b"q3"])

    broker.scripts.complete = _recording(broker, "0")
    broker.complete(job, b"R", 61.0, 2.5)
    assert _sent(broker, COMPLETE) == (
        {"job": k.job("J1"), "active": k.active("q1"), "completed": k.completed("q1"),
         "done": k.done("J1"), "events": k.events()}, [],
        {"id": b"J1", "token": b"T1", "result": b"R", "result_ttl_ms": b"61000",
         "prefix": prefix, "events_len": events_len, "queue": b"q1", "duration_ms": b"2500"},
        [])

    broker.scripts.enqueue_one = _recording(broker, "1")
    plain = Queue("q1", broker).options(priority=3).enqueue("examples.cpu:noop")
    keys, _, args, _ = _sent(broker, ENQUEUE_ONE)
    assert keys == {"job": k.job(plain.id), "queued": k.queued("q1"), "wake_list": k.wake("q1"),
                    "sequence": k.seq(), "queues": k.queues(), "events": k.events(),
                    "limits": k.limits(), "enqueued": k.enqueued()}
    assert {n: v for n, v in args.items() if n != "spec"} == {
        "queue": b"q1", "id": plain.id.encode(), "priority": b"3",
        "fn": b"examples.cpu:noop", "events_len": events_len, "resent": b"0"}
    assert b"examples.cpu:noop" in args["spec"]

    broker.scripts.enqueue = _recording(broker, "{1}")
    queued = Queue("q1", broker).options(delay=30).enqueue("examples.cpu:noop")
    keys, _, args, _ = _sent(broker, ENQUEUE)
    assert keys == {"queued": k.queued("q1"), "scheduled": k.scheduled("q1"),
                    "wake_list": k.wake("q1"), "sequence": k.seq(), "queues": k.queues(),
                    "timers": k.timers(), "completed": k.completed("q1"), "dead": k.dead("q1"),
                    "canceled": k.canceled("q1"), "events": k.events(),
                    "waiting": k.state_index("q1", "waiting"), "limits": k.limits(),
                    "enqueued": k.enqueued()}
    assert {n: v for n, v in args.items() if n != "jobs"} == {
        "queue": b"q1", "job_count": b"1", "events_len": events_len, "prefix": prefix,
        "resent": b"0"}
    assert queued.id.encode() in args["jobs"]

    broker.scripts.fail = _recording(broker, "'dead'")
    errors = [AttemptError(type="ValueError", message="bad", kind=ErrorKind.EXCEPTION,
                           attempt=1, duration=2.5)]
    hook = Prepared(id="H1", queue="q4", priority=5, spec=b"S", delay_ms=-1, at_ms=-1)
    for retry_in, on_dead in ((3.0, None), (None, hook)):
        broker.fail("J1", "q1", "T1", errors, retry_in, function="m:f", only_if_expired=True,
                    hooks=[on_dead] if on_dead else [])
        keys, hook_keys, args, each = _sent(broker, FAIL)
        assert keys == {"job": k.job("J1"), "active": k.active("q1"),
                        "scheduled": k.scheduled("q1"), "dead": k.dead("q1"),
                        "canceled": k.canceled("q1"), "done": k.done("J1"),
                        "timers": k.timers(), "events": k.events(), "stats": keys["stats"],
                        "totals": k.totals(), "sequence": k.seq(), "queues": k.queues()}
        assert keys["stats"].startswith(k.stats(0)[:-1])
        assert args == {
            "id": b"J1", "token": b"T1", "errors": encoder.encode(errors),
            "retry_ms": b"3000" if retry_in else b"-1", "only_if_expired": b"1",
            "prefix": prefix, "dead_ttl_ms": str(int(broker.defaults.dead_ttl * 1000)).encode(),
            "max_dead": str(broker.defaults.max_dead).encode(), "events_len": events_len,
            "queue": b"q1", "fn": b"m:f", "duration_ms": b"2500",
            "duration_bucket": args["duration_bucket"], "summary": b"ValueError: bad"}
        assert args["duration_bucket"] != b""
        assert each == ([] if retry_in else [b"H1", b"S", b"5", b"q4"])
        assert hook_keys == ([] if retry_in else [k.job("H1"), k.queued("q4"), k.wake("q4")])
