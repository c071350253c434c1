"""Retry delays: fixed, linear or exponential, capped, with optional jitter."""

from __future__ import annotations

import random
from enum import StrEnum
from typing import Annotated

import msgspec
from msgspec import Meta


class BackoffKind(StrEnum):
    FIXED = "fixed"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"


class Backoff(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How long to wait before attempt ``n + 1`` after attempt ``n`` failed.

    fixed: ``base``; linear: ``base * n``; exponential: ``base * factor ** (n - 1)``;
    each capped at ``cap``, then spread by +/- ``jitter`` (a fraction) so retries of
    many jobs that failed together do not hit a recovering service at one instant.
    """

    kind: BackoffKind = BackoffKind.EXPONENTIAL
    base: Annotated[float, Meta(ge=0)] = 1.0
    factor: Annotated[float, Meta(ge=1)] = 2.0
    cap: Annotated[float, Meta(ge=0)] = 3600.0
    jitter: Annotated[float, Meta(ge=0, le=1)] = 0.1

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        n = max(1, attempt)
        if self.kind is BackoffKind.FIXED:
            raw = self.base
        elif self.kind is BackoffKind.LINEAR:
            raw = self.base * n
        else:
            # Exponent clamped so huge attempt counts cannot overflow a float.
            raw = self.base * self.factor ** min(n - 1, 1024)
        delay = min(raw, self.cap)
        if self.jitter:
            spread = (rng or random).uniform(-self.jitter, self.jitter)
            delay = min(delay * (1.0 + spread), self.cap)
        return max(delay, 0.0)
