"""Every Lua script (its parts, its KEYS and ARGV by name) and every shared part.

Each script's header binds the same names, in the same order, to locals
(``local job = KEYS[1]``); ``tests/test_script_layouts.py`` reads the headers and fails
when the two differ, so moving an argument on one side only cannot go unnoticed.

Callers build both lists by name from these descriptions, except what the hot calls
(enqueue, claim, finish_claim, finish_batch, complete, fail) send per call: there a builder by name
would cost a fifth of the call's Python (measured: 25,000 instructions more on a
worker's finish_claim call of 115,000), so those values are written in order, and the
same test runs each hot call against a recording script and checks every value it sent
by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

_Pick = Callable[[dict[str, Any]], tuple[Any, ...]]


class Names:
    """The names of consecutive script arguments; picks their values from keywords."""

    __slots__ = ("_after", "_pick", "names")

    def __init__(self, names: str) -> None:
        self.names = tuple(names.split())
        self._pick = _picker(self.names)
        self._after: dict[str, Names] = {}

    def after(self, last: str) -> Names:
        """The names that follow ``last``."""
        found = self._after.get(last)
        if found is None:
            found = self._after[last] = Names(" ".join(
                self.names[self.names.index(last) + 1:]))
        return found

    def __call__(self, named: dict[str, Any]) -> tuple[Any, ...]:
        if len(named) == len(self.names):
            try:
                return self._pick(named)
            except KeyError:
                pass
        missing = [n for n in self.names if n not in named]
        unknown = [n for n in named if n not in self.names]
        raise TypeError(f"expected {', '.join(self.names) or 'no names'}; missing "
                        f"{missing or 'none'}, unknown {unknown or 'none'}")


def _picker(names: tuple[str, ...]) -> _Pick:
    if len(names) > 1:
        return itemgetter(*names)
    if names:
        return lambda named: (named[names[0]],)
    return lambda named: ()


class Layout:
    """One script's KEYS and ARGV by name, in order: fixed names, then a group of names
    repeated once per item (``each``: per queue, per job, ...), in KEYS and in ARGV."""

    __slots__ = (
        "arg_names",
        "each",
        "each_arg",
        "each_key",
        "key_names",
        "name",
        "parts",
        "resend_flag",
    )

    def __init__(self, name: str, *, parts: tuple[str, ...] = (), keys: str = "",
                 args: str = "", each: str = "", each_key: str = "", each_arg: str = "",
                 ) -> None:
        self.name = name
        self.parts = parts
        self.key_names = Names(keys)
        self.arg_names = Names(args)
        self.each = each
        self.each_key = Names(each_key)
        self.each_arg = Names(each_arg)
        if "resent" in self.arg_names.names:
            # The ARGV index a resend sets to "1" (ScriptRunner): the scripts that must
            # recognise a replay look only then. Unset for the other scripts.
            self.resend_flag: int = self.arg_names.names.index("resent")

    def keys(self, each: Sequence[Any] = (), /, **named: Any) -> list[Any]:
        """KEYS by name; ``each``: the group's keys, item after item (see ``key_item``)."""
        return [*self.key_names(named), *each]

    def args(self, each: Sequence[Any] = (), /, **named: Any) -> list[Any]:
        """ARGV by name; ``each``: the group's arguments, item after item."""
        return [*self.arg_names(named), *each]

    def keys_after(self, last: str, each: Sequence[Any] = (), /, **named: Any) -> list[Any]:
        """The KEYS after ``last``, by name: the part a hot call builds once and sends on
        every call, behind the values that change per call."""
        return [*self.key_names.after(last)(named), *each]

    def args_after(self, last: str, each: Sequence[Any] = (), /, **named: Any) -> list[Any]:
        """The ARGV after ``last``, by name (see ``keys_after``)."""
        return [*self.arg_names.after(last)(named), *each]

    def key_item(self, **named: Any) -> tuple[Any, ...]:
        """One item of the group of KEYS, by name."""
        return self.each_key(named)

    def arg_item(self, **named: Any) -> tuple[Any, ...]:
        """One item of the group of ARGV, by name."""
        return self.each_arg(named)

    def __repr__(self) -> str:
        return f"<Layout {self.name}>"


# -- the registry ---------------------------------------------------------------------------

# The operations several scripts share, each in jobs/store/lua/_<name>.lua, with the parts
# each one uses; a part comes after the parts it uses.
PARTS: dict[str, tuple[str, ...]] = {
    "after_final": (),
    "limits": (),
    "complete_job": ("after_final", "limits"),
    "claim_job": ("limits",),
}

# Every script, in jobs/store/lua/<name>.lua.

ENQUEUE = Layout(
    "enqueue", parts=("after_final",),
    keys="queued scheduled wake_list sequence queues timers completed dead canceled events "
         "waiting limits enqueued",
    args="queue job_count events_len prefix jobs resent")
ENQUEUE_ONE = Layout(
    "enqueue_one",
    keys="job queued wake_list sequence queues events limits enqueued",
    args="queue id spec priority fn events_len resent")
CLAIM = Layout(
    "claim", parts=("claim_job",),
    keys="paused events", each="queue", each_key="queued active wake_list",
    args="prefix token lease_ms events_len resent", each_arg="name")
FINISH_CLAIM = Layout(
    "finish_claim", parts=("complete_job", "claim_job"),
    keys="job done active completed events paused", each="queue",
    each_key="queued active wake_list",
    args="id token result result_ttl_ms duration_ms new_token resent queue prefix "
         "events_len lease_ms", each_arg="name")
FINISH_BATCH = Layout(
    "finish_batch", parts=("complete_job", "claim_job"),
    keys="paused events", each="queue", each_key="queued active wake_list",
    args="prefix token lease_ms events_len resent want done", each_arg="name")
COMPLETE = Layout(
    "complete", parts=("complete_job",),
    keys="job active completed done events",
    args="id token result result_ttl_ms prefix events_len queue duration_ms")
CLAIMED_BY = Layout(
    "claimed_by", parts=("claim_job",),
    each="queue", each_key="queued active wake_list",
    args="prefix token")
FAIL = Layout(
    "fail", parts=("after_final", "limits"),
    keys="job active scheduled dead canceled done timers events stats totals sequence queues",
    each_key="hook_job hook_queued hook_wake_list",
    args="id token errors retry_ms only_if_expired prefix dead_ttl_ms max_dead events_len "
         "queue fn duration_ms duration_bucket summary",
    each="hook",
    each_arg="hook_id hook_spec hook_priority hook_queue")
RELEASE = Layout(
    "release", parts=("after_final", "limits"),
    keys="job active queued wake_list events canceled done",
    args="id token events_len queue prefix")
RENEW = Layout(
    "renew",
    each="job", each_key="job active",
    args="lease_ms", each_arg="id token")
CANCEL = Layout(
    "cancel", parts=("after_final",),
    keys="job queued scheduled waiting canceled done wake_list events cancels held",
    args="id reason prefix canceled_ttl_ms max_canceled events_len queue")
REQUEUE = Layout(
    "requeue",
    keys="job dead canceled queued wake_list sequence events",
    args="id queue events_len prefix states")
PURGE = Layout(
    "purge",
    keys="job completed dead canceled log done kids",
    args="id queue states")
WATCH = Layout(
    "watch",
    keys="job")
PROGRESS = Layout(
    "progress",
    keys="job events",
    args="token progress events_len id queue done total message")
EVENT = Layout(
    "event",
    keys="events",
    args="events_len", each="field", each_arg="field value")
RESUME = Layout(
    "resume",
    keys="paused queued wake_list",
    args="queue")
PROMOTE = Layout(
    "promote", parts=("limits",),
    keys="sequence limits_due", each="queue", each_key="scheduled queued wake_list",
    args="prefix most")
RELEASE_LIMITS = Layout(
    "release_limits", parts=("limits",),
    keys="limits_due",
    args="prefix")
EXPIRED = Layout(
    "expired",
    each="queue", each_key="active",
    args="prefix most")
TRIM = Layout(
    "trim",
    keys="completed dead canceled",
    args="prefix dead_ttl_ms max_completed max_dead")
AGE = Layout(
    "age",
    each="queue", each_key="queued",
    args="prefix age_ms step most")
CRON_CLAIM = Layout(
    "cron_claim",
    keys="state job paused",
    args="tick job_id lease_ms keep_ms firer name")
CRON_SENT = Layout(
    "cron_sent",
    keys="state",
    args="tick job_id")
CRON_PAUSE = Layout(
    "cron_pause",
    keys="paused",
    args="name")
CRON_RESUME = Layout(
    "cron_resume",
    keys="paused state",
    args="name keep_ms")
SCHEDULES_PUBLISH = Layout(
    "schedules_publish",
    keys="definitions expiry",
    args="ttl_ms", each="schedule", each_arg="name definition")

RESEAL = Layout(
    "reseal",
    keys="job",
    each="field", each_arg="field digest value")

SCRIPTS: dict[str, Layout] = {layout.name: layout for layout in (
    ENQUEUE, ENQUEUE_ONE, CLAIM, FINISH_CLAIM, FINISH_BATCH, COMPLETE, CLAIMED_BY, FAIL,
    RELEASE, RENEW, CANCEL, REQUEUE, PURGE, WATCH, PROGRESS, EVENT, RESUME, PROMOTE,
    RELEASE_LIMITS, EXPIRED, TRIM, AGE, CRON_CLAIM, CRON_SENT, CRON_PAUSE, CRON_RESUME,
    SCHEDULES_PUBLISH, RESEAL)}
