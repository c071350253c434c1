"""Shared-memory slots: each child publishes its state where the supervisor reads it
without Redis traffic and without being woken once per job.

One anonymous ``MAP_SHARED`` mapping is created before any fork; slot ``i`` belongs to
one child at a time. Writes are guarded by a sequence counter (odd while writing) so the
reader never sees a half-written slot. A second mapping, one byte per slot, goes the
other way: the supervisor holds a child (its pool is paused) by setting its byte.
"""

from __future__ import annotations

import mmap
import signal
import struct
import threading
import time
from enum import IntEnum

import msgspec

from supervisor.runtime.holding import HELD_MAX

# seq, jobs_done, started, deadline, soft_deadline, heartbeat, idle_since, busy_time,
# state, pid, attempt, jobs_failed, then job id, queue, token, function, and the token of
# the claim in flight as fixed-size byte strings; last, the outcome counts the child has
# not written to Redis yet (length, then jobs.tally's encoding), which the supervisor
# writes out if the child dies before it could; then what the child holds besides its
# job (length, then supervisor.runtime.holding's encoding), which the supervisor gives
# back or writes if the child dies.
UNCOUNTED_MAX = 1024
# Sent by the supervisor to an idle or paused child after changing its hold byte, so a
# wait for work ends now; only to the child, never its group (a job's subprocesses).
POKE = signal.SIGUSR2
_LAYOUT = struct.Struct(f"<QQddddddiiii128s128s128s200s128sH{UNCOUNTED_MAX}s")
# The held area follows, written apart: its length, then only its bytes (not padded out).
_HELD_LENGTH = struct.Struct("<I")
_DEADLINES = 24  # deadline, soft_deadline
_HEARTBEAT = 40
_HELD = _LAYOUT.size
_UNCOUNTED = _HELD - UNCOUNTED_MAX - 2
_NEXT_TOKEN = _UNCOUNTED - 128
SLOT_SIZE = _LAYOUT.size + _HELD_LENGTH.size + HELD_MAX
# The parts written alone, compiled once (a format string is looked up on every call).
_SEQ = struct.Struct("<Q")
_ONE_TIME = struct.Struct("<d")
_TWO_TIMES = struct.Struct("<dd")
_TOKEN = struct.Struct("128s")
_COUNTS = struct.Struct(f"<H{UNCOUNTED_MAX}s")


class ChildState(IntEnum):
    EMPTY = 0
    BOOTING = 1
    IDLE = 2
    BUSY = 3
    STOPPING = 4
    PAUSED = 5  # up, claiming nothing: its pool is paused


BOOTED = frozenset({ChildState.IDLE, ChildState.BUSY, ChildState.PAUSED})


class SlotView(msgspec.Struct, frozen=True, kw_only=True):
    state: ChildState
    pid: int
    jobs_done: int
    jobs_failed: int  # jobs that raised (a killed worker's last job is the supervisor's)
    attempt: int
    started: float
    deadline: float
    soft_deadline: float
    heartbeat: float
    idle_since: float
    busy_time: float  # seconds spent on jobs, up to the last write (not the job it runs now)
    job_id: str
    queue: str
    token: str
    function: str
    next_token: str  # a claim sent with this token may have taken a job the slot does not show
    uncounted: bytes  # outcome counts not written yet (jobs.tally.decode_pending)
    held: bytes  # jobs held besides the one it runs (holding.decode_held)


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "replace")


class Slots:
    """``count`` slots in one shared mapping; times are ``time.monotonic()`` values."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._map = mmap.mmap(-1, SLOT_SIZE * count, flags=mmap.MAP_SHARED)
        self._holds = mmap.mmap(-1, count, flags=mmap.MAP_SHARED)  # written by the parent
        # Guards this process's writers (a child's main and heartbeat threads).
        self._lock = threading.Lock()

    def clear(self, i: int) -> None:
        self._map[i * SLOT_SIZE : (i + 1) * SLOT_SIZE] = b"\0" * SLOT_SIZE
        self._holds[i] = 0

    def hold(self, i: int, on: bool) -> None:
        """The supervisor's side: the child of slot ``i`` is to claim nothing (``on``),
        or to claim again. One byte: a single store, nothing to tear."""
        self._holds[i] = 1 if on else 0

    def held(self, i: int) -> bool:
        """The child's side, read before each claim and after each job."""
        return self._holds[i] == 1

    def write(self, i: int, state: ChildState, pid: int, jobs_done: int = 0, *,
              job_id: str = "", queue: str = "", token: str = "", function: str = "",
              attempt: int = 0, started: float = 0.0, deadline: float = 0.0,
              soft_deadline: float = 0.0, idle_since: float = 0.0,
              uncounted: bytes = b"", jobs_failed: int = 0, busy_time: float = 0.0,
              held: bytes = b"") -> None:
        off = i * SLOT_SIZE
        with self._lock:
            seq = _SEQ.unpack_from(self._map, off)[0]
            _SEQ.pack_into(self._map, off, seq + 1)  # odd: write in progress
            _LAYOUT.pack_into(
                self._map, off, seq + 1, jobs_done, started, deadline, soft_deadline,
                time.monotonic(), idle_since, busy_time, int(state), pid, attempt, jobs_failed,
                job_id.encode()[:128], queue.encode()[:128], token.encode()[:128],
                function.encode()[:200], b"", len(uncounted), uncounted,
            )
            self._put_held(off, held)
            _SEQ.pack_into(self._map, off, seq + 2)

    def beat(self, i: int) -> None:
        """Refresh the heartbeat only (called from the child's heartbeat thread)."""
        self._patch(i, _HEARTBEAT, _ONE_TIME, time.monotonic())

    def returned(self, i: int) -> None:
        """The slot's job has returned: its hard deadline no longer applies. A job that
        finished in time is not killed while its outcome waits for a slow or unreachable
        Redis (the slot still shows it busy, so its lease is still renewed)."""
        self._patch(i, _DEADLINES, _TWO_TIMES, 0.0, 0.0)

    def deadline(self, i: int, at: float) -> None:
        """A new hard deadline for what the busy child runs now (a job's on_failure hook,
        after its job returned)."""
        self._patch(i, _DEADLINES, _TWO_TIMES, at, 0.0)

    def claiming(self, i: int, token: str) -> None:
        """Publish the token of a claim about to be sent (cleared by the next ``write``):
        if the child dies before it can show the job, the supervisor gives it back."""
        self._patch(i, _NEXT_TOKEN, _TOKEN, token.encode()[:128])

    def uncounted(self, i: int, blob: bytes) -> None:
        """Publish the child's unwritten outcome counts (``b""`` once written)."""
        self._patch(i, _UNCOUNTED, _COUNTS, len(blob), blob)

    def holding(self, i: int, blob: bytes) -> None:
        """Publish what the child holds besides its job (``b""``: nothing)."""
        off = i * SLOT_SIZE
        with self._lock:
            seq = _SEQ.unpack_from(self._map, off)[0]
            _SEQ.pack_into(self._map, off, seq + 1)
            self._put_held(off, blob)
            _SEQ.pack_into(self._map, off, seq + 2)

    def _put_held(self, off: int, blob: bytes) -> None:
        size = min(len(blob), HELD_MAX)  # the child never holds more than HELD_MAX shows
        _HELD_LENGTH.pack_into(self._map, off + _HELD, size)
        start = off + _HELD + _HELD_LENGTH.size
        self._map[start:start + size] = blob[:size]

    def _patch(self, i: int, field: int, fmt: struct.Struct, *values: object) -> None:
        """Overwrite one field of slot ``i`` under its sequence counter."""
        off = i * SLOT_SIZE
        with self._lock:
            seq = _SEQ.unpack_from(self._map, off)[0]
            _SEQ.pack_into(self._map, off, seq + 1)
            fmt.pack_into(self._map, off + field, *values)
            _SEQ.pack_into(self._map, off, seq + 2)

    def read(self, i: int) -> SlotView:
        off = i * SLOT_SIZE
        for _ in range(1000):
            values = _LAYOUT.unpack_from(self._map, off)
            held_size = min(_HELD_LENGTH.unpack_from(self._map, off + _HELD)[0], HELD_MAX)
            start = off + _HELD + _HELD_LENGTH.size
            held = self._map[start:start + held_size]
            if values[0] % 2 == 0 and struct.unpack_from("<Q", self._map, off)[0] == values[0]:
                break
        (_, done, started, deadline, soft, beat, idle, busy, state, pid, attempt, failed,
         job_id, queue, token, function, next_token, size, uncounted) = values
        return SlotView(
            state=ChildState(state), pid=pid, jobs_done=done, jobs_failed=failed, attempt=attempt,
            started=started,
            deadline=deadline, soft_deadline=soft, heartbeat=beat, idle_since=idle,
            busy_time=busy, job_id=_text(job_id), queue=_text(queue), token=_text(token),
            function=_text(function),
            next_token=_text(next_token), uncounted=uncounted[:size],
            held=held,
        )
