"""metrics' request/reply contracts: the summary and the savings report.

A reply is either the model asked for or ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, PlainSerializer

from routewise.contracts.events import (
    Contract,
    Identifier,
    ScopedContract,
    ScopeId,
    Usd,
    fixed_point,
)
from routewise.contracts.vocabulary import (
    ScopeType,
)


class GetMetricsSummary(Contract):
    org_id: Identifier | None = None


class MetricsSummary(Contract):
    tasks: int
    selected: int
    rejected: int
    costs_recorded: int
    estimated_cost_usd: Usd
    baseline_cost_usd: Usd
    actual_cost_usd: Usd


MetricsDimension = Literal["strategy", "confidence", "model", "pattern", "policy", "task_type", "scope"]


class GetMetricsReport(ScopedContract):
    """Savings and routing metrics over the last ``days`` days, for everything or one scope."""

    days: int = Field(default=7, ge=1, le=3660)
    scope_type: ScopeType | None = None
    scope_id: ScopeId | None = Field(default=None, description="the org's id, or ORG/ID for a team, user or workspace")
    by: MetricsDimension | None = None


SignedUsd = Annotated[
    Decimal,
    Field(max_digits=30, decimal_places=12, allow_inf_nan=False),
    PlainSerializer(fixed_point, return_type=str, when_used="json"),
]
"""An amount of USD that may be negative (a saving that was a loss); as wide as ``Usd``, which
sums of the ledger's numeric(30, 12) columns fit."""


class CostSavings(Contract):
    """Seed 002's shape: what routing cost against what the baseline would have."""

    total_saved: SignedUsd
    percent_saved: float | None
    intelligent_cost: Usd
    baseline_cost: Usd
    period_days: int
    tasks: int


class CacheSavings(Contract):
    """The gateway's response-cache hits in the period: answers served without a provider call,
    and what those calls cost when their answers were first made (what the hits did not spend)."""

    hits: int = Field(default=0, ge=0, le=10**15)
    avoided_cost_usd: Usd = Decimal(0)


class SelfPricedSpend(Contract):
    """Costs accepted on the application's word (``ROUTEWISE_ALLOW_SELF_PRICED``: no known price for
    the model, or far from it), already inside the actual costs: shown apart so they can be told."""

    tasks: int = Field(default=0, ge=0, le=10**15)
    cost_usd: Usd = Decimal(0)


class Rated(Contract):
    rated: int = 0
    """How many of these tasks have a quality rating (FeedbackRecorded)."""
    avg_quality: float | None = None
    """Their mean quality, 0..1 (the latest rating of each task)."""


class StrategyMetrics(Rated):
    strategy: str
    count: int
    avg_cost: Usd | None
    high_confidence_pct: float


MEDIUM_CONFIDENCE = 0.3
"""The report's "medium" confidence bucket starts here ("high" at ``HIGH_CONFIDENCE``)."""


class ConfidenceMetrics(Contract):
    confidence: Literal["high", "medium", "low"]
    count: int
    avg_cost: Usd | None


class ModelShare(Rated):
    model: str
    count: int
    share_pct: float
    avg_cost: Usd | None


class EstimateError(Contract):
    """How far the chosen model's estimate was from what its call cost, over the tasks that made
    exactly that one call (retries and fallbacks are not what was estimated)."""

    tasks: int
    mape_pct: float | None
    """Mean of |estimate − actual| / actual."""
    bias_pct: float | None
    """Mean of (estimate − actual) / actual: positive when estimates run high (as cost.accuracy)."""


class PeriodCost(Contract):
    start: datetime
    cost: Usd
    tasks: int


class Breakdown(Rated):
    key: str
    tasks: int
    selected: int
    rejected: int
    estimated_cost: Usd
    baseline_cost: Usd
    actual_cost: Usd
    estimated_saved: SignedUsd
    percent_saved: float | None
    actual_saved: SignedUsd = Decimal(0)
    """Baseline priced at the real tokens minus the actual cost, over the priced tasks."""


class MetricsReport(Contract):
    period_days: int
    scope: str | None
    cost_savings: CostSavings
    """Estimated: the baseline's estimate against the chosen model's, over every selected task."""
    actual_savings: CostSavings
    """Actual: the baseline priced at each task's real token counts against what its calls cost,
    over the tasks with a recorded cost."""
    actual_unpriced_tasks: int = 0
    """Tasks with a recorded cost left out of ``actual_savings``: their baseline is not priced at
    their latest token counts yet (a moment after a cost), or cannot be (no price)."""
    cache: CacheSavings = Field(default_factory=CacheSavings)
    """The gateway's response-cache hits: tasks answered at $0 and the cost they avoided (not in
    ``actual_savings``, whose tasks were routed and called)."""
    self_priced: SelfPricedSpend = Field(default_factory=SelfPricedSpend)
    """The part of the period's actual costs that was self-priced."""
    adjusted_tasks: int = 0
    """Tasks whose cost was corrected or voided (CostAdjusted): their actual cost is the corrected one."""
    by_strategy: list[StrategyMetrics]
    by_confidence: list[ConfidenceMetrics]
    selection_patterns: list[ModelShare]
    rejections: dict[str, int]
    """Tasks rejected in the period, by the reason of their latest rejection (including those
    selected later, after an approval or a retry)."""
    rejected_then_selected: int = 0
    """Of those, how many were selected later."""
    fallback_rate: float | None
    """Share of tasks with a recorded cost that made more than one call or ran another model."""
    estimate_error: EstimateError
    cost_per_day: list[PeriodCost]
    cost_per_week: list[PeriodCost]
    cost_per_month: list[PeriodCost]
    breakdown: list[Breakdown] | None = None
    by: MetricsDimension | None = None
