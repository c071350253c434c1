"""Successes written several to a call (``Broker.finish_batch``): what one is, and how
the batch script takes it."""

from __future__ import annotations

import struct

import msgspec

from jobs.records import Claimed


class Completion(msgspec.Struct, frozen=True):
    """A job's success, written with a batch call (``Broker.finish_batch``)."""

    job: Claimed
    result: bytes
    result_ttl: float  # seconds
    duration: float  # seconds


def batch_token(token: str, i: int) -> str:
    """The token of the ``i``-th job (from 1) a batch claim sent with ``token`` took."""
    return token if i == 1 else f"{token}+{i}"


# finish_batch.lua's answer per completion, as ``complete`` names it.
WRITTEN = {1: "now", 2: "before"}
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_TAIL = struct.Struct(">ddH")


def pack_completion(c: Completion, queue_position: int) -> bytes:
    """One completion as finish_batch.lua unpacks it ('>Hc0Hc0Ic0ddH')."""
    job_id, token = c.job.id.encode(), c.job.token.encode()
    return b"".join((_U16.pack(len(job_id)), job_id, _U16.pack(len(token)), token,
                     _U32.pack(len(c.result)), c.result,
                     _TAIL.pack(max(1, int(c.result_ttl * 1000)), int(c.duration * 1000),
                                queue_position)))
