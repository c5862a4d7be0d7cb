"""Random draws the model needs beyond ``random.Random``'s own, always from the caller's RNG."""

from __future__ import annotations

import math
import random


def poisson(rng: random.Random, mean: float) -> int:
    """How many events of a Poisson process with ``mean`` happen (Knuth's method; a rounded
    normal for large means, where Knuth's product underflows)."""
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
