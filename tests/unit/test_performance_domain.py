"""Pure statistics of performance-tracker."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from routewise.services.performance_tracker.domain import (
    HEALTHY,
    Health,
    HealthPolicy,
    after_cooldown,
    after_outcome,
    mean_interval,
    t975,
    wilson,
)

POLICY = HealthPolicy(
    error_rate=0.5, min_samples=10, window=timedelta(minutes=5), cooldown=timedelta(seconds=60), probation_successes=3
)
NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def test_wilson_interval_matches_the_formula() -> None:
    interval = wilson(8, 10)
    assert interval is not None
    assert (interval.low, interval.high) == (0.4902, 0.9433)
    assert wilson(0, 0) is None
    extreme = wilson(10, 10)
    assert extreme is not None and extreme.high == 1.0 and extreme.low > 0.69


def test_small_samples_get_honest_wide_quality_intervals() -> None:
    two = mean_interval(0.2 + 0.8, 0.04 + 0.64, 2)  # mean 0.5, sd 0.424
    assert two is not None
    assert two.low == 0.0 and two.high == 1.0  # t(1) = 12.7: clipped to the quality range
    many = mean_interval(0.7 * 100, (0.7**2 + 0.01) * 100, 100)
    assert many is not None and many.high - many.low < 0.05
    assert math.isclose(t975(1), 12.706) and t975(200) < 1.98


def test_a_healthy_model_is_demoted_only_with_enough_samples_over_the_threshold() -> None:
    assert after_outcome(HEALTHY, POLICY, False, 9, 0, NOW) is None  # too few samples
    assert after_outcome(HEALTHY, POLICY, False, 10, 6, NOW) is None  # 40 % errors
    demoted = after_outcome(HEALTHY, POLICY, False, 10, 5, NOW)
    assert demoted is not None and demoted.health.state == "demoted" and demoted.samples == 10


def test_probation_after_cooldown_then_promotion_or_demotion() -> None:
    demoted = Health("demoted", NOW, "errors")
    assert after_cooldown(demoted, POLICY, NOW + timedelta(seconds=59)) is None
    probation = after_cooldown(demoted, POLICY, NOW + timedelta(seconds=60))
    assert probation is not None and probation.health.state == "probation"
    state = probation.health
    for _ in range(2):
        step = after_outcome(state, POLICY, True, 1, 1, NOW)
        assert step is not None and step.health.state == "probation"
        state = step.health
    promoted = after_outcome(state, POLICY, True, 1, 1, NOW)
    assert promoted is not None and promoted.health.state == "healthy"
    again = after_outcome(probation.health, POLICY, False, 1, 0, NOW)
    assert again is not None and again.health.state == "demoted"
