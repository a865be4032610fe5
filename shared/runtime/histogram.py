"""A constant-size histogram over log-spaced buckets (four per doubling, ~19 % wide), for
token counts and latencies: memory and work per observation stay the same however long the
history. Quantiles are interpolated geometrically inside their bucket."""

from __future__ import annotations

import math

BUCKETS_PER_DOUBLING = 4
N_BUCKETS = 4 * 24  # values up to 2**24 ≈ 16.7M (``routewise.contracts.cost.HISTOGRAM_BUCKETS``)


def bucket_of(value: float) -> int:
    if value <= 1:
        return 0
    return min(int(math.log2(value) * BUCKETS_PER_DOUBLING), N_BUCKETS - 1)


def bucket_bounds(index: int) -> tuple[float, float]:
    return 2 ** (index / BUCKETS_PER_DOUBLING), 2 ** ((index + 1) / BUCKETS_PER_DOUBLING)


def empty() -> list[float]:
    return [0.0] * N_BUCKETS


def observe(counts: list[float], value: float, *, decay: float = 1.0) -> list[float]:
    """The histogram after one more observation (everything decayed by ``decay`` first)."""
    updated = [c * decay for c in counts] if counts else empty()
    updated[bucket_of(value)] += 1.0
    return updated


def quantile(counts: list[float], q: float) -> float | None:
    """The q-quantile; None when the histogram is empty."""
    total = sum(counts)
    if total <= 0:
        return None
    target = q * total
    running = 0.0
    for index, count in enumerate(counts):
        if count and running + count >= target:
            low, high = bucket_bounds(index)
            if index == 0:
                low = 1.0
            fraction = (target - running) / count
            return float(low * (high / low) ** fraction)
        running += count
    return bucket_bounds(len(counts) - 1)[1]
