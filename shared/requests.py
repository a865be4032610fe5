"""Request/reply contracts (imperative subjects such as ``routewise.cost.estimate``).

A reply is either the model below or ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import Field, model_validator

from shared.events import MAX_PROMPT_CHARS, ChatMessage, Contract, Identifier, Scope, TaskType, Tier, Usd

MAX_TOKENS = 10_000_000
ModelId = str


class EstimateCost(Contract):
    """Estimate what running a prompt on each of ``models`` would cost."""

    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    messages: list[ChatMessage] | None = Field(default=None, max_length=10_000)
    models: list[ModelId] = Field(min_length=1, max_length=200)
    task_type: TaskType = "normal"
    expected_output_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    cached_input_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _has_input(self) -> EstimateCost:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        text = self.prompt if self.prompt is not None else "".join(m.content for m in self.messages or [])
        if not text.strip():
            raise ValueError("prompt is empty")
        return self


class ModelEstimate(Contract):
    model: ModelId
    provider: str
    input_tokens: int
    output_tokens: int
    cost_usd: Usd
    exact_token_count: bool
    encoding: str
    context_window: int
    fits_context: bool
    """False when the prompt alone exceeds the model's context window."""


class CostEstimate(Contract):
    estimates: list[ModelEstimate]
    """One per requested model, in the order asked. A model the prompt does not fit is listed
    with ``fits_context`` false; if it fits none, the reply is a ``context_window_exceeded`` error."""


class PriceUsage(Contract):
    """Price a call that already happened."""

    model: ModelId
    provider: str | None = None
    input_tokens: int = Field(ge=0, le=MAX_TOKENS * 10)
    output_tokens: int = Field(ge=0, le=MAX_TOKENS * 10)
    cached_input_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS * 10)


class Price(Contract):
    model: ModelId
    provider: str
    input_cost_usd: Usd
    output_cost_usd: Usd
    cost_usd: Usd


class GetBudgetStatus(Contract):
    org_id: Identifier


class BudgetStatus(Contract):
    org_id: Identifier
    spent_usd: Usd
    costs_recorded: int


class QueryPerformance(Contract):
    model: ModelId | None = None


class ModelPerformance(Contract):
    model: ModelId
    provider: str
    requests: int
    successes: int
    failures: int
    mean_latency_ms: float | None
    mean_quality: float | None
    feedback_count: int


class Performance(Contract):
    models: list[ModelPerformance]


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
