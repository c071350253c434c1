"""What a worker holds besides the job it runs: jobs a batch claim took that have not
started yet, and jobs that ran and succeeded whose outcome is not written yet (it goes
with the next call). Both are mirrored in the worker's slot, so the supervisor of a
worker that dies gives the first back (no attempt spent) and writes the second.

A held job starts within ``bound`` of its claim (5 ms by default: five times
``[worker] claim_batch_under_ms``) or goes back to its queue: the worker's main thread
gives back what it finds late, and a thread of its own does it while a job runs long, so
a job that came in behind a batch never waits on it longer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import msgspec

from jobs.records import Claimed
from jobs.store.completions import Completion

log = logging.getLogger(__name__)

HOLD_BOUND = 0.005  # seconds a held job may wait for its start, by default
HELD_MAX = 8192  # bytes of the slot that mirror what is held (kept results included)
RETRY_PAUSE = 0.5  # between attempts to give jobs back while Redis is away


class Held(msgspec.Struct, frozen=True, array_like=True):
    """One held job as the slot shows it: not started (``result`` None) or run and
    succeeded, its outcome not written yet."""

    job_id: str
    queue: str
    token: str
    result: bytes | None = None
    result_ttl: float = 0.0
    duration: float = 0.0
    function: str = "?"  # what its success is counted under


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[Held])


def decode_held(blob: bytes) -> list[Held]:
    """What a slot shows as held; unreadable bytes show nothing."""
    try:
        return _decoder.decode(blob) if blob else []
    except msgspec.DecodeError:
        return []


def _waiting(job: Claimed) -> bytes:
    return _encoder.encode(Held(job.id, job.queue, job.token))


def _kept(c: Completion) -> bytes:
    return _encoder.encode(Held(c.job.id, c.job.queue, c.job.token, c.result, c.result_ttl,
                                c.duration, c.job.spec.function if c.job.spec else "?"))


def _array(entries: list[bytes]) -> bytes:
    """A msgpack array of entries encoded one by one (each is encoded once, when it is
    held or kept, not again at every change of the list)."""
    n = len(entries)
    head = bytes((0x90 | n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
    return head + b"".join(entries)


class Holding:
    """The held jobs of one worker. ``give_back`` releases jobs in Redis (raising while it
    cannot); ``mirror`` shows the held list in the worker's slot."""

    def __init__(self, give_back: Callable[[list[Claimed]], None],
                 mirror: Callable[[bytes], None], bound: float = HOLD_BOUND) -> None:
        self.bound = bound
        self.lock = threading.Lock()
        # Claimed, not started, first to run first; and each one's encoded mirror entry.
        self.waiting: deque[Claimed] = deque()
        self._waiting: deque[bytes] = deque()
        self.deadline = 0.0  # when the jobs waiting go back if not started
        self.done: list[Completion] = []  # succeeded, to be written with the next call
        self._done: list[bytes] = []
        self._returning: list[tuple[Claimed, bytes]] = []  # given back, until Redis has them
        # Taken by the main thread to run, until the slot shows it running (``started``).
        self._starting: tuple[Claimed, bytes] | None = None
        self._flushed_for = 0.0  # the deadline at which kept successes were last written
        self._size = 0  # bytes of every entry above
        self._give_back = give_back
        self._mirror = mirror
        self._blob: bytes | None = b""  # None: to be joined again
        self._wake = threading.Event()
        # Claim-ahead (supervisor.runtime.ahead): the job during which to claim the next
        # one, and when; and kept successes to be written by the holder thread now.
        self.ahead_for: str | None = None
        self.ahead_at = 0.0
        self._flush_due = False
        self.on_ahead: Callable[[str], None] = lambda job_id: None
        self.on_flush: Callable[[], None] = lambda: None

    # -- the main thread ---------------------------------------------------------------------

    def hold(self, jobs: list[Claimed], wait: float = 0.0) -> None:
        """Jobs claimed with the one about to run (or ahead of its end, expected in
        ``wait`` seconds): each starts within ``wait`` + ``bound`` or goes back."""
        entries = [_waiting(j) for j in jobs]
        extra: list[Claimed] = []
        with self.lock:
            for job, entry in zip(jobs, entries, strict=True):
                if self._size + len(entry) + 3 > HELD_MAX:  # no room to show it: back
                    self._returning.append((job, entry))
                    extra.append(job)
                else:
                    self.waiting.append(job)
                    self._waiting.append(entry)
                self._size += len(entry)
            self.deadline = time.monotonic() + wait + self.bound
            self._blob = None
            if not self._wake.is_set():
                self._wake.set()
        self._return(extra, retry=False)

    def arm(self, job_id: str, at: float) -> None:
        """Claim the next job at ``at`` (monotonic) if ``job_id`` still runs then."""
        with self.lock:
            self.ahead_for, self.ahead_at = job_id, at
            self._wake.set()

    def disarm(self) -> None:
        """The job that was to be claimed ahead of has ended."""
        self.ahead_for = None

    def flush_soon(self) -> None:
        """Have the holder thread write the kept successes now (the next job runs)."""
        with self.lock:
            self._flush_due = True
            self._wake.set()

    def next(self) -> Claimed | None:
        """The next held job to run, or None: none held, or those held are late (they go
        back now)."""
        if not self.waiting:
            return None
        with self.lock:
            if not self.waiting:
                return None
            if time.monotonic() <= self.deadline:
                # Still shown as held until the slot shows it running (``started``).
                job = self.waiting.popleft()
                self._starting = (job, self._waiting.popleft())
                self._blob = None
                return job
            late = self._take()
        self._return(late, retry=False)
        return None

    def started(self) -> None:
        """Under ``lock``, with the slot write that shows the job running: it is no
        longer held."""
        if self._starting is not None:
            self._size -= len(self._starting[1])
            self._starting = None
            self._blob = None

    def give_back_starting(self) -> None:
        """The job taken to run is not to run here after all (its pool was paused)."""
        with self.lock:
            starting, self._starting = self._starting, None
            if starting is not None:
                self._returning.append(starting)
                self._blob = None
        if starting is not None:
            self._return([starting[0]], retry=False)

    def keep(self, c: Completion) -> bool:
        """Keep a success to write with the next call, if the slot has room to mirror it
        and a held job is to run first; False: write it now."""
        if not self.waiting:
            return False
        entry = _kept(c)
        with self.lock:
            if not self.waiting or self._size + len(entry) + 3 > HELD_MAX:
                return False
            self.done.append(c)
            self._done.append(entry)
            self._size += len(entry)
            self._blob = None
            return True

    def written(self, count: int) -> None:
        """The first ``count`` kept successes are in Redis."""
        if not count:
            return
        with self.lock:
            del self.done[:count]
            self._size -= sum(map(len, self._done[:count]))
            del self._done[:count]
            self._blob = None
            self._mirror(self.blob())

    def give_back_all(self) -> None:
        """Give back every job waiting (a stop, a pause, a recycle); kept successes stay
        to be written."""
        with self.lock:
            jobs = self._take()
        self._return(jobs, retry=False)

    def blob(self) -> bytes:
        """The slot's mirror of what is held (read under ``lock`` with the slot write)."""
        if self._blob is None:
            entries = [e for _, e in self._returning]
            if self._starting is not None:
                entries.append(self._starting[1])
            entries += self._waiting
            entries += self._done
            self._blob = _array(entries) if entries else b""
        return self._blob

    @property
    def busy(self) -> bool:
        """Anything held: a job to start or an outcome to write."""
        return bool(self.waiting or self.done)

    def owns(self, job: Claimed) -> bool:
        """``job`` came from here and waits for its slot write (``started``)."""
        return self._starting is not None and self._starting[0] is job

    # -- the holder thread -------------------------------------------------------------------

    def start(self) -> None:
        threading.Thread(target=self._watch, daemon=True, name="holder").start()

    def _watch(self) -> None:
        """While the main thread runs a job: give back held jobs past their deadline,
        write kept successes when asked, claim ahead when the time comes."""
        wake_at: float | None = None  # the next time something is due (None: nothing)
        while True:
            self._wake.wait(None if wake_at is None else max(0.0, wake_at - time.monotonic()))
            now = time.monotonic()
            with self.lock:
                self._wake.clear()  # a change from here on wakes the next wait at once
                late = self._take() if self.waiting and now >= self.deadline else []
                # Kept successes are written now when asked (claim-ahead), or once the
                # hold deadline passed: the job after them runs long.
                overdue = bool(self.done) and now >= self.deadline and (
                    self.deadline != self._flushed_for)
                if overdue:
                    self._flushed_for = self.deadline
                flush, self._flush_due = (self._flush_due or overdue) and bool(self.done), False
                ahead = None
                if self.ahead_for is not None and now >= self.ahead_at:
                    ahead, self.ahead_for = self.ahead_for, None
                times = [self.deadline] if self.waiting or (
                    self.done and self.deadline != self._flushed_for) else []
                if self.ahead_for is not None:
                    times.append(self.ahead_at)
                wake_at = min(times) if times else None
            try:
                if late:
                    self._return(late, retry=True)
                if flush:
                    self.on_flush()
                if ahead is not None:
                    self.on_ahead(ahead)
            except Exception:  # the thread must go on: what it holds is in the slot
                log.exception("holder thread")

    # -- both ----------------------------------------------------------------------------------

    def _take(self) -> list[Claimed]:
        """Under ``lock``: the waiting jobs, moved to those being given back."""
        jobs = list(self.waiting)
        self._returning += zip(jobs, self._waiting, strict=True)
        self.waiting.clear()
        self._waiting.clear()
        self._blob = None
        return jobs

    def _return(self, jobs: list[Claimed], retry: bool) -> None:
        """Give ``jobs`` back; until Redis has them the slot still shows them (a worker
        that dies meanwhile has them given back by its supervisor)."""
        if not jobs:
            return
        while True:
            try:
                self._give_back(jobs)
                break
            except Exception as exc:
                if not retry:
                    log.warning("held jobs not given back yet (%s); retrying", exc)
                    threading.Thread(target=self._return, args=(jobs, True), daemon=True,
                                     name="holder-retry").start()
                    return
                time.sleep(RETRY_PAUSE)
        with self.lock:
            given = {id(j) for j in jobs}
            self._size -= sum(len(e) for j, e in self._returning if id(j) in given)
            self._returning = [(j, e) for j, e in self._returning if id(j) not in given]
            self._blob = None
            self._mirror(self.blob())
