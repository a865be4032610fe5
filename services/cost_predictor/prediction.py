"""Output-token prediction that learns, in constant memory.

Each (task_type, model) keeps a histogram of observed output tokens (``routewise.runtime.histogram``),
decayed by ``DECAY`` on every new observation so recent behaviour weighs most. p50/p90 come
from the histogram, blended with the task type's prior until enough samples arrive, and capped
by the policy's max_tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from routewise.runtime import histogram

DECAY = 0.995  # effective memory ≈ 200 observations
PRIOR_WEIGHT = 8.0  # the prior counts as this many observations
P90_OVER_P50_PRIOR = 2.5

# Output tokens expected per task type before any outcome was observed.
OUTPUT_PRIOR: dict[str, int] = {
    "normal": 400,
    "simple_query": 150,
    "code": 800,
    "fix_bug": 800,
    "investigate_error": 700,
    "analyze_logs": 600,
    "deep_research": 1500,
}
DEFAULT_OUTPUT_PRIOR = 400


def observe(counts: list[float], tokens: int) -> list[float]:
    """The histogram after one more observation, older ones decayed."""
    return histogram.observe(counts, tokens, decay=DECAY)


@dataclass(frozen=True)
class OutputPrediction:
    p50: int
    p90: int
    source: Literal["given", "prior", "learned"]
    samples: float  # effective (decayed) observations behind the learned part


def predict(
    task_type: str,
    counts: list[float] | None,
    *,
    expected: int | None = None,
    max_tokens: int | None = None,
) -> OutputPrediction:
    if expected is not None:
        return OutputPrediction(expected, expected, "given", 0.0)
    prior50 = float(OUTPUT_PRIOR.get(task_type, DEFAULT_OUTPUT_PRIOR))
    prior90 = prior50 * P90_OVER_P50_PRIOR
    samples = sum(counts) if counts else 0.0
    learned50 = histogram.quantile(counts, 0.5) if counts else None
    learned90 = histogram.quantile(counts, 0.9) if counts else None
    source: Literal["prior", "learned"]
    if learned50 is None or learned90 is None:
        p50, p90, source = prior50, prior90, "prior"
    else:
        weight = samples / (samples + PRIOR_WEIGHT)  # log-space blend: the prior fades as data arrives
        p50 = math.exp(weight * math.log(learned50) + (1 - weight) * math.log(prior50))
        p90 = math.exp(weight * math.log(learned90) + (1 - weight) * math.log(prior90))
        source = "learned"
    if max_tokens is not None:
        p50, p90 = min(p50, max_tokens), min(p90, max_tokens)
    p50_int = max(1, round(p50))
    return OutputPrediction(p50_int, max(p50_int, round(p90)), source, round(samples, 2))
