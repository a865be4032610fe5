"""Request/reply contracts (imperative subjects such as ``routewise.cost.estimate``).

A reply is either the model below or ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, PlainSerializer, model_validator

from shared.events import (
    MAX_PROMPT_CHARS,
    ChatMessage,
    Contract,
    Identifier,
    ModelSelected,
    PolicyName,
    Scope,
    TaskRejected,
    TaskType,
    Tier,
    Usd,
    UtcDatetime,
    fixed_point,
)

MAX_TOKENS = 10_000_000
ModelId = str


ModelRef = Annotated[str, Field(min_length=1, max_length=200)]
"""``model`` or ``provider/model``; providers' aliases and dated ids are understood."""
ProviderId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
TokenCount = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
PerMillion = Annotated[
    Decimal,
    Field(ge=0, le=100_000, max_digits=20, decimal_places=12, allow_inf_nan=False),
    PlainSerializer(fixed_point, return_type=str, when_used="json"),
]
"""USD per million tokens."""


class EstimateCost(Contract):
    """Estimate what running a prompt on each of ``models`` would cost."""

    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    messages: list[ChatMessage] | None = Field(default=None, max_length=10_000)
    models: list[ModelRef] = Field(min_length=1, max_length=200)
    task_type: TaskType = "normal"
    expected_output_tokens: TokenCount | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS, description="the policy's max_tokens")
    cached_input_tokens: TokenCount = 0
    cache_write_tokens: TokenCount = 0
    scope: Scope | None = Field(default=None, description="adds budget impact when its budget is known")
    task_id: UUID | None = Field(default=None, description="keep this estimate to compare with the actual cost")
    min_tier: Tier | None = None
    min_quality: float | None = Field(default=None, ge=0, le=1)
    cached_prefix: bool = False
    """Cache-aware pricing: the messages before the last user message (a conversation's earlier
    turns) are read from the provider's prompt cache at the cache-read price, once they are long
    enough to be cached (1,024 tokens)."""

    @model_validator(mode="after")
    def _has_input(self) -> EstimateCost:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        text = self.prompt if self.prompt is not None else "".join(m.content for m in self.messages or [])
        if not text.strip():
            raise ValueError("prompt is empty")
        if len(set(self.models)) != len(self.models):
            raise ValueError("models lists a model twice")
        return self


BudgetImpact = Literal["low", "medium", "high"]


class ModelEstimate(Contract):
    model: str
    provider: str
    tier: Tier | None
    price_source: Literal["override", "genai-prices"]
    input_tokens: int
    exact_token_count: bool
    encoding: str
    context_window: int | None
    fits_context: bool
    """False when the prompt alone exceeds the model's context window."""
    output_tokens_p50: int
    output_tokens_p90: int
    output_source: Literal["given", "prior", "learned"]
    output_samples: float
    cost_usd_p50: Usd
    cost_usd_p90: Usd
    budget_impact: BudgetImpact | None = None


class Recommendation(Contract):
    model: str
    reason: str


class BudgetBasis(Contract):
    scope_type: str
    scope_id: str
    remaining_usd: Usd
    percent_remaining: float


class CostEstimate(Contract):
    estimates: list[ModelEstimate]
    """One per requested model, in the order asked. A model the prompt does not fit is listed
    with ``fits_context`` false; if it fits none, the reply is a ``context_window_exceeded`` error."""
    recommendation: Recommendation | None
    budget_status: BudgetBasis | None = None


class PriceUsage(Contract):
    """Price a call that already happened."""

    model: ModelRef
    provider: ProviderId | None = None
    input_tokens: int = Field(ge=0, le=MAX_TOKENS * 10)
    output_tokens: int = Field(ge=0, le=MAX_TOKENS * 10)
    cached_input_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS * 10)
    cache_write_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS * 10)


class Price(Contract):
    model: str
    provider: str
    source: Literal["override", "genai-prices"]
    input_cost_usd: Usd
    output_cost_usd: Usd
    cost_usd: Usd


class SetPrice(Contract):
    """Add or replace a deployment's price for a (provider, model)."""

    model: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]*$")]
    provider: ProviderId
    input_mtok: PerMillion
    output_mtok: PerMillion
    cache_read_mtok: PerMillion | None = None
    cache_write_mtok: PerMillion | None = None
    context_window: int | None = Field(default=None, gt=0, le=100_000_000)
    actor: Annotated[str, Field(min_length=1, max_length=128)]


class RemovePrice(Contract):
    model: str
    provider: ProviderId
    actor: Annotated[str, Field(min_length=1, max_length=128)]


class ListPrices(Contract):
    """No models: every override. With models: the price each would be charged, and from where."""

    models: list[ModelRef] = Field(default_factory=list, max_length=200)


class PriceEntry(Contract):
    model: str
    provider: str
    source: Literal["override", "genai-prices"]
    input_mtok: PerMillion | None
    output_mtok: PerMillion | None
    cache_read_mtok: PerMillion | None
    cache_write_mtok: PerMillion | None
    tiered: bool = False
    """genai-prices has higher prices past a context length (long-context tiers); these are the base prices."""
    context_window: int | None
    updated_by: str | None = None
    updated_at: datetime | None = None


class PriceList(Contract):
    prices: list[PriceEntry]


class CompareTiers(Contract):
    input_tokens: TokenCount = 1000
    output_tokens: TokenCount = 500
    cached_input_tokens: TokenCount = 0

    @model_validator(mode="after")
    def _cached_within_input(self) -> CompareTiers:
        if self.cached_input_tokens > self.input_tokens:
            raise ValueError("cached_input_tokens cannot exceed input_tokens")
        return self


class TierSummary(Contract):
    tier: Tier
    models: list[str]
    quality_min: float
    quality_max: float
    cost_min_usd: Usd
    cost_max_usd: Usd
    cache_support: Literal["all", "some", "none"]
    cache_models: list[str]


class TierComparison(Contract):
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    tiers: list[TierSummary]


class GetEstimateAccuracy(Contract):
    model: str | None = None
    task_type: TaskType | None = None


class EstimateAccuracyRow(Contract):
    model: str
    task_type: str
    samples: int
    cost_mape_percent: float
    """Mean absolute percentage error of the p50 cost estimate."""
    cost_bias_percent: float
    """Mean signed percentage error: positive when estimates run high."""
    output_mape_percent: float
    output_bias_percent: float
    p90_coverage_percent: float
    """How often the actual output stayed at or under the p90 prediction."""


class EstimateAccuracy(Contract):
    rows: list[EstimateAccuracyRow]


ScopeType = Literal["org", "team", "user", "workspace"]
Actor = Annotated[str, Field(min_length=1, max_length=128)]
ThresholdAction = Literal["notify", "restrict-models", "downgrade", "require-approval", "block"]
Refusal = Literal["budget_exhausted", "approval_required", "over_request_cap", "model_restricted"]
BudgetHealth = Literal["ok", "warning", "critical", "exceeded"]
PositiveUsd = Annotated[Usd, Field(gt=0)]


def _known_time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)") from exc
    return value


TimeZone = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_known_time_zone)]


class ThresholdSpec(Contract):
    """At ``percent`` of the limit, these actions are in force for the rest of the period."""

    percent: int = Field(ge=1, le=100)
    actions: list[ThresholdAction] = Field(min_length=1)
    restricted_models: list[str] = Field(default_factory=list, max_length=200)
    max_tier: Tier | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ThresholdSpec:
        if len(set(self.actions)) != len(self.actions):
            raise ValueError(f"threshold {self.percent}% lists an action twice")
        if (self.restricted_models or self.max_tier) and "restrict-models" not in self.actions:
            raise ValueError(f"threshold {self.percent}%: restricted models or a max tier need restrict-models")
        return self


def _increasing(thresholds: list[ThresholdSpec] | None) -> list[ThresholdSpec] | None:
    if thresholds is not None:
        percents = [t.percent for t in thresholds]
        if percents != sorted(set(percents)):
            raise ValueError(f"thresholds must be strictly increasing, got {percents}")
    return thresholds


Thresholds = Annotated[list[ThresholdSpec], Field(max_length=20), AfterValidator(_increasing)]


class CreateBudget(Contract):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    scope_type: ScopeType
    scope_id: Identifier
    period: Literal["daily", "weekly", "monthly", "quarterly", "total"]
    limit_usd: PositiveUsd
    mode: Literal["hard", "soft"] = "hard"
    timezone: TimeZone = "UTC"
    starts_at: UtcDatetime | None = Field(default=None, description="default: now")
    max_cost_per_request: PositiveUsd | None = None
    thresholds: Thresholds | None = Field(
        default=None,
        description="default: 50 notify, 80 notify+restrict-models "
        "(max tier versatile), 95 notify+require-approval, 100 block",
    )
    actor: Actor


class UpdateBudget(Contract):
    """Change what is given; scope and period are fixed (create another budget instead)."""

    budget_id: UUID
    actor: Actor
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    limit_usd: PositiveUsd | None = None
    mode: Literal["hard", "soft"] | None = None
    timezone: TimeZone | None = None
    max_cost_per_request: PositiveUsd | None = None
    clear_max_cost_per_request: bool = False
    thresholds: Thresholds | None = None


class DeleteBudget(Contract):
    budget_id: UUID
    actor: Actor


class GetBudget(Contract):
    budget_id: UUID


class ListBudgets(Contract):
    scope_type: ScopeType | None = None
    scope_id: Identifier | None = None


class Extension(Contract):
    id: UUID
    amount_usd: Usd
    expires_at: datetime
    reason: str
    actor: str


class Budget(Contract):
    id: UUID
    name: str
    scope_type: ScopeType
    scope_id: str
    period: str
    timezone: str
    starts_at: datetime
    limit_usd: Usd
    mode: Literal["hard", "soft"]
    max_cost_per_request: Usd | None
    thresholds: list[ThresholdSpec]
    extensions: list[Extension] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime


class BudgetList(Contract):
    budgets: list[Budget]


class CostRestrictions(Contract):
    model_downgrading: bool = False
    restricted_models: list[str] = Field(default_factory=list)
    max_tier: Tier | None = None
    max_cost_per_request: Usd | None = None
    block_non_essential: bool = False
    approval_required: bool = False


class ReserveBudget(Contract):
    """Hold ``amount_usd`` on every budget of the scope chain for this task, or say why not."""

    task_id: UUID
    scope: Scope
    amount_usd: Usd
    model: Annotated[str, Field(min_length=1, max_length=200)]
    tier: Tier | None = None


class Reservation(Contract):
    task_id: UUID
    admitted: bool
    reservation_id: UUID | None = None
    amount_usd: Usd
    expires_at: datetime | None = None
    reason: Refusal | None = None
    detail: str
    budget_id: UUID | None = None
    """The budget that refused (or None)."""
    restrictions: CostRestrictions
    over_soft_limit: list[UUID] = Field(default_factory=list)
    """Soft budgets this reservation goes over (admitted, and alerting)."""


class ReleaseBudget(Contract):
    task_id: UUID
    reason: Annotated[str, Field(min_length=1, max_length=500)] = "released"


class Released(Contract):
    task_id: UUID
    released: bool
    status: str | None
    """The reservation's status after the call (None when there was none)."""


class ApproveTask(Contract):
    task_id: UUID
    actor: Actor
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class Approval(Contract):
    task_id: UUID
    actor: str
    reason: str
    created_at: datetime


class ExtendBudget(Contract):
    budget_id: UUID
    amount_usd: PositiveUsd
    until: UtcDatetime
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    actor: Actor


class GetBudgetStatus(Contract):
    """One scope (``scope_type`` + ``scope_id``), or a whole chain (``scope``: user → team → org)."""

    scope_type: ScopeType | None = None
    scope_id: Identifier | None = None
    scope: Scope | None = None

    @model_validator(mode="after")
    def _one_way(self) -> GetBudgetStatus:
        single = self.scope_type is not None and self.scope_id is not None
        if single == (self.scope is not None) or (self.scope_type is None) != (self.scope_id is None):
            raise ValueError("give scope_type and scope_id, or scope")
        return self

    def scopes(self) -> list[tuple[str, str]]:
        if self.scope is not None:
            return self.scope.chain()
        assert self.scope_type is not None and self.scope_id is not None
        return [(self.scope_type, self.scope_id)]


class BudgetView(Contract):
    budget_id: UUID
    name: str
    scope_type: ScopeType
    scope_id: str
    period: str
    mode: Literal["hard", "soft"]
    period_start: datetime
    period_end: datetime | None
    limit_usd: Usd
    """Including active extensions."""
    base_limit_usd: Usd
    current_spend_usd: Usd
    reserved_usd: Usd
    remaining_usd: Usd
    percent_used: Decimal
    status: BudgetHealth
    thresholds_in_force: list[int]


class BudgetStatus(Contract):
    scope_type: ScopeType
    scope_id: str
    budgets: list[BudgetView]
    aggregate_status: BudgetHealth
    cost_restrictions: CostRestrictions
    spent_usd: Usd
    """All recorded spend on the (narrowest) scope, whatever budgets exist."""
    costs_recorded: int
    limit_usd: Usd | None = None
    remaining_usd: Usd | None = None
    """The tightest budget's limit and what remains of it; None while the chain has no budget."""


Window = Literal["1h", "24h", "7d", "all"]


class QueryPerformance(Contract):
    model: ModelId | None = None
    task_type: TaskType | None = None
    pattern: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    window: Window = "24h"

    @model_validator(mode="after")
    def _one_breakdown(self) -> QueryPerformance:
        if self.task_type and self.pattern:
            raise ValueError("filter by task_type or by pattern, not both")
        return self


class Interval(Contract):
    low: float
    high: float


class ModelStats(Contract):
    """What a model delivered over a window (for one task type or pattern, or overall)."""

    model: str
    task_type: str | None = None
    pattern: str | None = None
    window: Window
    requests: int
    success_rate: float | None
    success_ci95: Interval | None
    """Wilson score interval."""
    error_rate: float | None
    errors_by_type: dict[str, int]
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    output_tokens_per_s: float | None
    mean_cost_usd: Usd | None
    mean_quality: float | None
    quality_samples: int
    quality_ci95: Interval | None


class ModelHealth(Contract):
    state: Literal["healthy", "demoted", "probation"]
    since: datetime
    reason: str


class Performance(Contract):
    stats: list[ModelStats]
    health: dict[str, ModelHealth]


class PerformanceSnapshot(Contract):
    """What the selector reads per model from the KV bucket, without a request per task."""

    model: str
    health: ModelHealth
    windows: dict[str, ModelStats]
    by_task_type: dict[str, ModelStats]
    by_pattern: dict[str, ModelStats]
    updated_at: datetime
    version: int = 0
    """Grows with every change to the model's statistics or health: a newer snapshot is never
    replaced by an older one."""


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


class GetMetricsReport(Contract):
    """Savings and routing metrics over the last ``days`` days, for everything or one scope."""

    days: int = Field(default=7, ge=1, le=3660)
    scope_type: ScopeType | None = None
    scope_id: Identifier | None = None
    by: MetricsDimension | None = None

    @model_validator(mode="after")
    def _scope_whole(self) -> GetMetricsReport:
        if (self.scope_type is None) != (self.scope_id is None):
            raise ValueError("give scope_type and scope_id together")
        return self


SignedUsd = Annotated[
    Decimal,
    Field(max_digits=21, decimal_places=12, allow_inf_nan=False),
    PlainSerializer(fixed_point, return_type=str, when_used="json"),
]
"""An amount of USD that may be negative (a saving that was a loss)."""


class CostSavings(Contract):
    """Seed 002's shape: what routing cost against what the baseline would have."""

    total_saved: SignedUsd
    percent_saved: float | None
    intelligent_cost: Usd
    baseline_cost: Usd
    period_days: int
    tasks: int


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


class GetDecision(Contract):
    task_id: UUID


class Decision(Contract):
    task_id: UUID
    status: str  # selected | rejected
    scope: Scope
    task_type: TaskType
    model: ModelId | None
    provider: str | None
    tier: Tier | None
    estimated_cost_usd: Usd | None
    reason: str | None
    decided_at: datetime
    trace_context: dict[str, str] = Field(default_factory=dict)
    """The decision's W3C trace context: record the task's cost under it to keep one trace per task."""


def _distinct(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("lists a value twice")
    return values


class RoutingPolicy(Contract):
    """Which models a kind of task may use (the first is what it would use without routing)."""

    name: PolicyName
    description: Annotated[str, Field(max_length=500)] = ""
    models: Annotated[list[ModelRef], Field(min_length=1, max_length=50), AfterValidator(_distinct)]
    max_cost_per_task_usd: PositiveUsd | None = None
    """No candidate whose p90 estimate is above this."""
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    """Caps the output tokens predicted (and reserved) per task."""
    task_types: Annotated[list[TaskType], AfterValidator(_distinct)] = Field(default_factory=list)
    """Task types routed by this policy (the rest go to ``normal``)."""
    updated_by: str | None = None
    updated_at: datetime | None = None


class SetPolicy(Contract):
    """Create or replace a policy; ``task_types`` moves those task types to it (None: leave the map)."""

    name: PolicyName
    description: Annotated[str, Field(max_length=500)] = ""
    models: Annotated[list[ModelRef], Field(min_length=1, max_length=50), AfterValidator(_distinct)]
    max_cost_per_task_usd: PositiveUsd | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    task_types: Annotated[list[TaskType], AfterValidator(_distinct)] | None = None
    actor: Actor


class ListPolicies(Contract):
    pass


class PolicyList(Contract):
    policies: list[RoutingPolicy]
    default_policy: str
    """The policy of a task type no policy names."""


class TierPreferences(Contract):
    """A workspace's routing preferences (after seed 000's cognitive tier preferences)."""

    workspace_id: Identifier
    default_tier: Tier = Tier.standard
    """The tier every task uses when ``auto_escalation`` is off (kept within min and max tier)."""
    min_tier: Tier | None = None
    max_tier: Tier | None = None
    max_cost_per_request_usd: PositiveUsd | None = None
    preferred_providers: Annotated[list[ProviderId], AfterValidator(_distinct)] = Field(default_factory=list)
    """When a candidate of these providers qualifies, only those are considered."""
    cache_aware_routing: bool = True
    """Price a conversation's earlier turns at the cache-read price."""
    auto_escalation: bool = True
    """Let the prompt's complexity choose the tier (otherwise ``default_tier``)."""
    fallback: bool = True
    """Give each decision a fallback chain to fail over to."""
    quality_bias: float = Field(default=0.5, ge=0, le=1)
    """The quality/cost knob for tasks that do not set their own."""
    updated_by: str | None = None
    updated_at: datetime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TierPreferences:
        low, high = self.min_tier, self.max_tier
        if low is not None and high is not None and low.rank > high.rank:
            raise ValueError(f"min_tier {low.value} is above max_tier {high.value}")
        return self


class GetTierPreferences(Contract):
    workspace_id: Identifier


class SetTierPreferences(Contract):
    """Replace a workspace's preferences (every field; unset ones take their defaults)."""

    preferences: TierPreferences
    actor: Actor


class DeleteTierPreferences(Contract):
    workspace_id: Identifier
    actor: Actor


class TierPreferencesReply(Contract):
    preferences: TierPreferences
    stored: bool
    """False: nothing is stored for the workspace and these are the defaults."""


class RoutingPreview(Contract):
    """``routing.decide``: what the selector would decide for a task, without reserving budget or
    publishing anything. Exactly one of ``selected`` and ``rejected``."""

    selected: ModelSelected | None
    rejected: TaskRejected | None
    policy: str | None
    """None when the task was rejected before a policy applied."""
    target_tier: Tier | None
    excluded: dict[str, str] = Field(default_factory=dict)
    """Models of the policy that were not candidates, and why."""
