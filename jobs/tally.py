"""Outcome counters kept in the worker and added to Redis four times a second.

Counting completions inside the hot Lua script cost a dozen extra commands per job.
A worker-side tally costs no round trip of its own while jobs keep coming: its counts
travel in the same write as the next outcome when the last flush is 0.25 s old. A
worker also flushes when it goes idle and before a job when counts are due, so a worker
killed in a job loses only the counts of the moment before it, never a job.

Those counts are not lost either when the worker runs under a supervisor: the tally
mirrors what it has not written yet (``snapshot``, a few hundred bytes) where its supervisor
can read it, and a supervisor that reaps a killed or crashed worker writes them out.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import msgspec

from jobs.store.broker import Broker
from jobs.timeseries import bucket, minute

FLUSH_EVERY = 0.25


# (queue, function, duration bucket) -> [jobs, summed milliseconds]
Counts = dict[tuple[str, str, str], list[int]]
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(dict[int, dict[tuple[str, str, str], list[int]]])


def encode_pending(pending: dict[int, Counts]) -> bytes:
    return _encoder.encode(pending) if pending else b""


def decode_pending(blob: bytes) -> dict[int, Counts]:
    """Counts as ``encode_pending`` wrote them; unreadable bytes count as none."""
    try:
        return _decoder.decode(blob) if blob else {}
    except msgspec.DecodeError:
        return {}


class Tally:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_minute: dict[int, Counts] = {}
        # Never flushed: a new worker's first counts are written before its next job (which
        # may be killed and take them along).
        self._last_flush = float("-inf")
        # Told what is left unwritten each time counts are handed over or put back.
        self.mirror: Callable[[bytes], None] | None = None

    def completed(self, queue: str, function: str, duration: float) -> None:
        # Per job only a tuple is counted; the hash fields are spelled out at flush time.
        key = (queue, function, bucket(duration))
        ms = int(duration * 1000)
        with self._lock:
            counts = self._by_minute.setdefault(minute(), {})
            seen = counts.get(key)
            if seen is None:
                counts[key] = [1, ms]
            else:
                seen[0] += 1
                seen[1] += ms

    def due(self) -> bool:
        return bool(self._by_minute) and time.monotonic() - self._last_flush >= FLUSH_EVERY

    def take(self, only_if_due: bool = False) -> dict[int, Counts]:
        """The counts by minute, handed over for writing (``restore`` them if that fails)."""
        with self._lock:
            if not self._by_minute or (only_if_due and not self.due()):
                # Nothing written, so the clock keeps running: the first job after an idle
                # spell is counted in Redis at once, before the worker takes another.
                return {}
            pending, self._by_minute = self._by_minute, {}
            self._last_flush = time.monotonic()
        if self.mirror is not None:
            self.mirror(b"")
        return pending

    def send_due(self) -> CountsInFlight | None:
        """The counts, if due, to ride along with the next outcome (``settle`` it after)."""
        if time.monotonic() - self._last_flush < FLUSH_EVERY:
            return None  # the usual answer on the hot path, before any other call
        pending = self.take(only_if_due=True)
        return CountsInFlight(self, pending) if pending else None

    def snapshot(self) -> bytes:
        """The counts not written yet, encoded for ``decode_pending``."""
        with self._lock:
            return encode_pending(self._by_minute)

    def restore(self, pending: dict[int, Counts]) -> None:
        """Keep counts that were not written for the next flush."""
        with self._lock:
            for m, counts in pending.items():
                kept = self._by_minute.setdefault(m, {})
                for key, (n, ms) in counts.items():
                    seen = kept.setdefault(key, [0, 0])
                    seen[0] += n
                    seen[1] += ms
        if self.mirror is not None:
            self.mirror(self.snapshot())

    def flush(self, broker: Broker) -> None:
        """Write the counts; on failure they are kept for the next flush."""
        pending = self.take()
        if not pending:
            return
        try:
            broker.maintenance.add_counts(by_field(pending))
        except Exception:
            self.restore(pending)
            raise


class CountsInFlight:
    """Counts sent along with another write: given back to the tally when that write
    fails, unless Redis is known to have applied them. They go in one MULTI/EXEC, so a
    write cut off part-way applied none of them; a count is written twice only when the
    connection broke after the whole write reached the server."""

    __slots__ = ("applied", "fields", "pending", "tally")

    def __init__(self, tally: Tally, pending: dict[int, Counts]) -> None:
        self.tally = tally
        self.pending = pending
        self.fields = by_field(pending)
        self.applied = False

    def answered(self, applied: bool) -> None:
        """Told by the broker once the replies to the counts are read."""
        self.applied = applied

    def settle(self) -> None:
        if not self.applied:
            self.tally.restore(self.pending)


def by_field(pending: dict[int, Counts]) -> dict[int, dict[str, int]]:
    """The statistics hash fields (and increments) of each minute's counts."""
    out: dict[int, dict[str, int]] = {}
    for m, counts in sorted(pending.items()):
        fields: Counter[str] = Counter()
        for (queue, function, bound), (n, ms) in counts.items():
            fields[f"{queue}|completed"] += n
            fields[f"{queue}|d|{bound}"] += n
            fields[f"{queue}|dsum"] += ms
            fields[f"fn|{function}|completed"] += n
            fields[f"fn|{function}|d|{bound}"] += n
            fields[f"fn|{function}|dsum"] += ms
        out[m] = dict(fields)
    return out
