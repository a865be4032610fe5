"""Pure rules: windows, statistics from bucketed counters, confidence intervals, health."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from routewise.contracts.performance import Interval, ModelStats
from routewise.contracts.vocabulary import HealthState, Window
from routewise.runtime import histogram

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Z95 = 1.959964

# Each window is summed from buckets of one granularity: minutes for the last hour, hours for
# a day or a week, and one all-time bucket.
WINDOWS: dict[str, tuple[str, timedelta | None]] = {
    "1h": ("minute", timedelta(hours=1)),
    "24h": ("hour", timedelta(hours=24)),
    "7d": ("hour", timedelta(days=7)),
    "all": ("all", None),
}
GRANULARITIES = ("minute", "hour", "all")
KEEP = {"minute": timedelta(hours=2), "hour": timedelta(days=8)}


def bucket_start(granularity: str, at: datetime) -> datetime:
    if granularity == "minute":
        return at.replace(second=0, microsecond=0)
    if granularity == "hour":
        return at.replace(minute=0, second=0, microsecond=0)
    return EPOCH


def window_start(window: Window, now: datetime) -> tuple[str, datetime]:
    granularity, span = WINDOWS[window]
    return granularity, (bucket_start(granularity, now - span) if span else EPOCH)


def wilson(successes: int, n: int) -> Interval | None:
    if n == 0:
        return None
    p = successes / n
    denominator = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denominator
    return Interval(low=round(max(0.0, centre - half), 4), high=round(min(1.0, centre + half), 4))


# Two-sided 95 % critical values of Student's t for 1..30 degrees of freedom.
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t975(df: int) -> float:
    """Student's t for a 95 % interval; close to the normal's 1.96 for large samples."""
    return _T975[df - 1] if df <= len(_T975) else Z95 + 2.4 / df


def mean_interval(total: float, squares: float, n: int) -> Interval | None:
    """95 % interval of a mean quality from n samples (Student's t: honest for small n)."""
    if n < 2:
        return None
    mean = total / n
    variance = max(squares / n - mean * mean, 0.0) * n / (n - 1)
    half = t975(n - 1) * math.sqrt(variance / n)
    return Interval(low=round(max(0.0, mean - half), 4), high=round(min(1.0, mean + half), 4))


@dataclass
class Totals:
    """Counters summed over a window's buckets."""

    requests: int = 0
    successes: int = 0
    success_latency_ms: float = 0.0
    output_tokens_timed: int = 0
    cost_usd: Decimal = Decimal(0)
    quality_sum: float = 0.0
    quality_sq_sum: float = 0.0
    quality_n: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency: list[float] = field(default_factory=histogram.empty)


def stats(
    model: str, window: Window, t: Totals, *, task_type: str | None = None, pattern: str | None = None
) -> ModelStats:
    def rounded(value: float | None, places: int = 2) -> float | None:
        return None if value is None else round(value, places)

    return ModelStats(
        model=model,
        task_type=task_type,
        pattern=pattern,
        window=window,
        requests=t.requests,
        success_rate=rounded(t.successes / t.requests, 4) if t.requests else None,
        success_ci95=wilson(t.successes, t.requests),
        error_rate=rounded(1 - t.successes / t.requests, 4) if t.requests else None,
        errors_by_type=dict(sorted(t.errors.items())),
        latency_p50_ms=rounded(histogram.quantile(t.latency, 0.5)),
        latency_p95_ms=rounded(histogram.quantile(t.latency, 0.95)),
        output_tokens_per_s=(
            rounded(t.output_tokens_timed / (t.success_latency_ms / 1000)) if t.success_latency_ms else None
        ),
        mean_cost_usd=(t.cost_usd / t.requests).quantize(Decimal("1e-12")) if t.requests else None,
        mean_quality=rounded(t.quality_sum / t.quality_n, 4) if t.quality_n else None,
        quality_samples=t.quality_n,
        quality_ci95=mean_interval(t.quality_sum, t.quality_sq_sum, t.quality_n),
    )


# ------------------------------------------------------------------ health


@dataclass(frozen=True)
class HealthPolicy:
    error_rate: float
    min_samples: int
    window: timedelta
    cooldown: timedelta
    probation_successes: int


@dataclass(frozen=True)
class Health:
    state: HealthState
    since: datetime
    reason: str
    probation_successes: int = 0


@dataclass(frozen=True)
class Transition:
    health: Health
    error_rate: float | None = None
    samples: int = 0


def after_outcome(
    current: Health, policy: HealthPolicy, success: bool, requests: int, successes: int, now: datetime
) -> Transition | None:
    """The health change an outcome causes, if any. ``requests``/``successes`` count the outcomes
    of the error-rate window since the model's last change of state (this one included)."""
    error_rate = 1 - successes / requests if requests else 0.0
    if current.state == "probation":
        if not success:
            return Transition(Health("demoted", now, "failed again on probation"), error_rate, requests)
        done = current.probation_successes + 1
        if done >= policy.probation_successes:
            return Transition(Health("healthy", now, f"{done} successes on probation"), error_rate, requests)
        return Transition(Health("probation", current.since, current.reason, done))
    if current.state == "healthy" and requests >= policy.min_samples and error_rate >= policy.error_rate:
        reason = (
            f"error rate {error_rate:.0%} over the last {requests} outcomes "
            f"(threshold {policy.error_rate:.0%}, window {int(policy.window.total_seconds())} s)"
        )
        return Transition(Health("demoted", now, reason), error_rate, requests)
    return None


def after_cooldown(current: Health, policy: HealthPolicy, now: datetime) -> Transition | None:
    if current.state == "demoted" and now - current.since >= policy.cooldown:
        return Transition(Health("probation", now, f"cool-down of {int(policy.cooldown.total_seconds())} s over"))
    return None


HEALTHY = Health("healthy", EPOCH, "no outcome has demoted it")
