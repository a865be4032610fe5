"""cost-predictor's request/reply contracts: estimates, prices and overrides, tier comparison, accuracy,
adjustments of recorded costs.

A reply is either the model asked for or ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, model_validator

from routewise.contracts.events import (
    MAX_ATTEMPTS,
    MAX_PROMPT_CHARS,
    CallUsd,
    ChatMessage,
    Contract,
    Reason,
    Scope,
    SignedCallUsd,
    TaskType,
    Tier,
    Usd,
)
from routewise.contracts.fields import (
    MAX_TOKENS,
    Actor,
    ModelRef,
    PerMillion,
    ProviderId,
    TokenCount,
)


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
    catalog_revision: int | None = Field(default=None, ge=0, le=2**62)
    """The revision of the live catalog the asker knows (the selector's): a cost-predictor replica
    that has not yet loaded it reloads the catalog and prices first, so a model registered a
    moment ago is priced by every replica."""

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
    model: ModelRef
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
    updated_by: Actor | None = None
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
    model: ModelRef | None = None
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


class AdjustCost(Contract):
    """Correct (``cost_usd``) or void (``void``: the cost becomes 0) a recorded cost of one call of
    a task. cost-predictor checks it against the cost it recorded, audits it and publishes
    CostAdjusted, which budgets, metrics and performance statistics apply once."""

    task_id: UUID
    attempt: int = Field(default=1, ge=1, le=MAX_ATTEMPTS)
    """Which call of the task (1: the decided model; the gateway's fallbacks are 2, 3, …)."""
    cost_event_id: UUID | None = None
    """Which recorded cost of that call, when it has several (an application recorded it twice)."""
    cost_usd: CallUsd | None = None
    """The call's right cost."""
    void: bool = False
    """The cost should never have been recorded: it becomes 0."""
    reason: Reason
    actor: Actor
    """Who asks (the CLI: --by or user@host; over HTTP, the gateway's key)."""
    scope: Scope | None = None
    """The task's scope, when the asker knows it (the gateway does, from the task's decision): only
    a cost of this scope, or within it, is adjusted; any other is not found."""

    @model_validator(mode="after")
    def _one_change(self) -> AdjustCost:
        if (self.cost_usd is None) == (not self.void):
            raise ValueError("give either cost_usd (a correction) or void (true), not both")
        return self


class CostAdjustment(Contract):
    """One adjustment of a recorded cost, as audited."""

    adjustment_id: UUID
    """The CostAdjusted's event_id."""
    task_id: UUID
    attempt: int
    cost_event_id: UUID
    scope: Scope
    model: str
    provider: str
    sequence: int
    previous_cost_usd: CallUsd
    cost_usd: CallUsd
    delta_usd: SignedCallUsd
    void: bool
    self_priced: bool
    reason: str
    actor: str
    at: datetime


class ListCostAdjustments(Contract):
    """The latest adjustments, newest first: of one task, or of every task (within ``scope``)."""

    task_id: UUID | None = None
    scope: Scope | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class CostAdjustmentList(Contract):
    adjustments: list[CostAdjustment]


HISTOGRAM_BUCKETS = 96
"""Buckets of an output-token histogram (``routewise.runtime.histogram``: four per doubling)."""


class OutputProfiles(Contract):
    """The output tokens learnt for one task type, per model (decayed histograms): what
    cost-predictor publishes to the ``<NS>_OUTPUT_PROFILES`` KV bucket (key: the task type) and the
    selector estimates its decisions with."""

    task_type: TaskType
    models: dict[
        Annotated[str, Field(min_length=1, max_length=200)],
        Annotated[list[Annotated[float, Field(ge=0, le=1e9)]], Field(max_length=HISTOGRAM_BUCKETS)],
    ] = Field(max_length=10_000)
