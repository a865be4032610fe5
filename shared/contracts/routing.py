"""the selector's request/reply contracts: decisions, previews, policies and tier preferences.

A reply is either the model asked for or ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import AfterValidator, Field, model_validator

from routewise.contracts.events import (
    Contract,
    ModelSelected,
    PolicyName,
    Scope,
    TaskRejected,
    TaskType,
    Tier,
    Usd,
    WorkspacePath,
)
from routewise.contracts.fields import (
    MAX_TOKENS,
    Actor,
    ModelId,
    ModelRef,
    PositiveUsd,
    ProviderId,
)


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
    task_types: Annotated[list[TaskType], AfterValidator(_distinct)] = Field(default_factory=list, max_length=100)
    """Task types routed by this policy (the rest go to ``normal``)."""
    updated_by: Actor | None = None
    updated_at: datetime | None = None


class SetPolicy(Contract):
    """Create or replace a policy; ``task_types`` moves those task types to it (None: leave the map)."""

    name: PolicyName
    description: Annotated[str, Field(max_length=500)] = ""
    models: Annotated[list[ModelRef], Field(min_length=1, max_length=50), AfterValidator(_distinct)]
    max_cost_per_task_usd: PositiveUsd | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    task_types: Annotated[list[TaskType], Field(max_length=100), AfterValidator(_distinct)] | None = None
    actor: Actor


class ListPolicies(Contract):
    pass


class PolicyList(Contract):
    policies: list[RoutingPolicy]
    default_policy: str
    """The policy of a task type no policy names."""


class TierPreferences(Contract):
    """A workspace's routing preferences: its cognitive tiers, providers, quality bias and fallbacks."""

    workspace_id: WorkspacePath = Field(description="the workspace within its org: ORG/ID")
    default_tier: Tier = Tier.standard
    """The tier every task uses when ``auto_escalation`` is off (kept within min and max tier)."""
    min_tier: Tier | None = None
    max_tier: Tier | None = None
    max_cost_per_request_usd: PositiveUsd | None = None
    preferred_providers: Annotated[list[ProviderId], Field(max_length=50), AfterValidator(_distinct)] = Field(
        default_factory=list
    )
    """When a candidate of these providers qualifies, only those are considered."""
    cache_aware_routing: bool = True
    """Price a conversation's earlier turns at the cache-read price."""
    auto_escalation: bool = True
    """Let the prompt's complexity choose the tier (otherwise ``default_tier``)."""
    fallback: bool = True
    """Give each decision a fallback chain to fail over to."""
    quality_bias: float = Field(default=0.5, ge=0, le=1)
    """The quality/cost knob for tasks that do not set their own."""
    updated_by: Actor | None = None
    updated_at: datetime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TierPreferences:
        low, high = self.min_tier, self.max_tier
        if low is not None and high is not None and low.rank > high.rank:
            raise ValueError(f"min_tier {low.value} is above max_tier {high.value}")
        return self


class GetTierPreferences(Contract):
    workspace_id: WorkspacePath


class SetTierPreferences(Contract):
    """Replace a workspace's preferences (every field; unset ones take their defaults)."""

    preferences: TierPreferences
    actor: Actor


class DeleteTierPreferences(Contract):
    workspace_id: WorkspacePath
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
