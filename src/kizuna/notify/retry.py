"""Retry timing: exponential backoff with a cap and full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 0.5  # seconds before the first retry
    cap: float = 60.0  # never wait longer than this between tries
    jitter: float = 0.2  # +- fraction, so that many subscribers do not retry in lockstep

    def delay(self, failures: int, base: float | None = None) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1, 2, ...)."""
        start = self.base if base is None else base
        raw = min(self.cap, start * (2 ** max(failures - 1, 0)))
        return max(0.0, raw * (1 + random.uniform(-self.jitter, self.jitter)))
