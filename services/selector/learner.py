"""Predicted answer quality per model: a prior from the model's tier and the prompt's
complexity, corrected by what performance-tracker observed for the pattern or task type, then
by a text model learnt online from feedback.

The text model is one logistic regression per model over hashed features of the prompt (its
words, word pairs, length, pattern and task type), trained with AdaGrad on each feedback's
quality as a residual over the observed-statistics estimate. It is small (a weight per feature
seen), needs no training run, and learns which kinds of prompts a cheap model gets right.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from routewise.contracts.performance import ModelStats

_TOKEN = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")
MAX_TEXT_CHARS = 20_000
"""Only the start of a long prompt is read for features (enough to tell what kind of task it is)."""
MAX_WORDS = 2_000

LEARNING_RATE = 0.1
PSEUDO_SAMPLES = 8.0
"""Weight of the prior against observed quality samples (and of confidence: n / (n + 8))."""
QUALITY_SLOPE = 10.0
MATCH_QUALITY_LOGIT = 1.73
"""A model whose quality prior matches the prompt's difficulty is predicted at quality 0.85."""


def text_features(text: str, pattern: str, task_type: str) -> list[int]:
    """Hashed features of a prompt: words, adjacent word pairs, a length bucket, pattern and task type."""
    words = _TOKEN.findall(text[:MAX_TEXT_CHARS].lower())[:MAX_WORDS]
    keys = set(words)
    keys.update(f"{a} {b}" for a, b in itertools.pairwise(words))
    keys.add(f"#len{min(int(math.log2(len(words) + 1)), 16)}")
    keys.add(f"#pattern={pattern}")
    keys.add(f"#type={task_type}")
    return sorted({zlib.crc32(k.encode()) for k in keys})


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def prior_quality(quality_prior: float, complexity: float) -> float:
    """Quality expected before any outcome: high when the model's prior is above the prompt's
    difficulty, falling off below it. Difficulty maps complexity onto the catalog's prior scale
    (0.45 + 0.5 * complexity), so the tier the complexity strategy picks is the cheapest tier
    predicted at 0.85."""
    difficulty = 0.45 + 0.5 * complexity
    return sigmoid(QUALITY_SLOPE * (quality_prior - difficulty) + MATCH_QUALITY_LOGIT)


def observed(stats: Iterable[ModelStats | None]) -> tuple[float | None, int]:
    """Mean quality and its sample count from the most-sampled of the given statistics."""
    best: ModelStats | None = None
    for s in stats:
        if s is not None and s.mean_quality is not None and (best is None or s.quality_samples > best.quality_samples):
            best = s
    return (best.mean_quality, best.quality_samples) if best else (None, 0)


def base_quality(prior: float, mean: float | None, samples: int) -> float:
    """The prior moved towards the observed mean quality, by the number of samples."""
    if mean is None or samples <= 0:
        return prior
    return (samples * mean + PSEUDO_SAMPLES * prior) / (samples + PSEUDO_SAMPLES)


def confidence(samples: int) -> float:
    return round(samples / (samples + PSEUDO_SAMPLES), 4)


@dataclass
class TextModel:
    """One model's weights (as loaded by a replica, or being updated by the feedback consumer)."""

    bias: float = 0.0
    bias_g: float = 0.0
    examples: int = 0
    version: int = 0
    weights: dict[int, float] = field(default_factory=dict)

    def adjustment(self, features: list[int]) -> float:
        """The logit to add to the base estimate for a prompt with these features."""
        if not features:
            return self.bias
        get = self.weights.get
        return self.bias + sum(get(f, 0.0) for f in features) / math.sqrt(len(features))


@dataclass(frozen=True)
class Update:
    """The result of learning one example: new bias, and the new (weight, accumulator) per feature."""

    bias: float
    bias_g: float
    weights: dict[int, tuple[float, float]]


def learn(
    bias: float,
    bias_g: float,
    current: Mapping[int, tuple[float, float]],
    features: list[int],
    base_logit: float,
    quality: float,
) -> Update:
    """One AdaGrad step of log-loss towards ``quality`` (0..1) for a prompt with ``features``.
    ``current`` holds the (weight, squared-gradient sum) of the features already known."""
    scale = 1 / math.sqrt(len(features)) if features else 0.0
    z = base_logit + bias + sum(current.get(f, (0.0, 0.0))[0] for f in features) * scale
    error = sigmoid(z) - quality
    bias_g += error * error
    bias -= LEARNING_RATE * error / math.sqrt(bias_g + 1e-9)
    grad = error * scale
    updated: dict[int, tuple[float, float]] = {}
    for f in features:
        w, g = current.get(f, (0.0, 0.0))
        g += grad * grad
        updated[f] = (w - LEARNING_RATE * grad / math.sqrt(g + 1e-9), g)
    return Update(bias, bias_g, updated)
