"""budget-enforcer's request/reply contracts: reservations, status, and budget administration.

A reply is either the model asked for or ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, Field, model_validator

from routewise.contracts.events import (
    MAX_ATTEMPTS,
    Contract,
    Identifier,
    Scope,
    ScopedContract,
    ScopeId,
    Tier,
    Usd,
    UtcDatetime,
)
from routewise.contracts.fields import (
    Actor,
    ModelRef,
    PositiveUsd,
    TimeZone,
)
from routewise.contracts.vocabulary import (
    BudgetHealth,
    BudgetMode,
    Period,
    Refusal,
    ScopeType,
    ThresholdAction,
)


class ThresholdSpec(Contract):
    """At ``percent`` of the limit, these actions are in force for the rest of the period."""

    percent: int = Field(ge=1, le=100)
    actions: list[ThresholdAction] = Field(min_length=1)
    restricted_models: list[ModelRef] = Field(default_factory=list, max_length=200)
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


class CreateBudget(ScopedContract):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    scope_type: ScopeType
    scope_id: ScopeId = Field(description="the org's id, or ORG/ID for a team, user or workspace")
    period: Period
    limit_usd: PositiveUsd
    mode: BudgetMode = "hard"
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
    mode: BudgetMode | None = None
    timezone: TimeZone | None = None
    max_cost_per_request: PositiveUsd | None = None
    clear_max_cost_per_request: bool = False
    thresholds: Thresholds | None = None


class DeleteBudget(Contract):
    budget_id: UUID
    actor: Actor


class GetBudget(Contract):
    budget_id: UUID


class ListBudgets(ScopedContract):
    scope_type: ScopeType | None = None
    scope_id: ScopeId | None = None
    org_id: Identifier | None = Field(
        default=None, description="only this org's budgets: its own and its teams', users' and workspaces'"
    )


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
    mode: BudgetMode
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
    attempt: int = Field(default=1, ge=1, le=MAX_ATTEMPTS)
    """Which call of the task this holds for: the selector's decision is attempt 1; a caller that
    falls back to another model (the gateway) holds for each further call before making it."""


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
    """Give back a task's hold: only what decided the task can, as only it knows the reservation."""

    task_id: UUID
    reservation_id: UUID = Field(description="the reservation being released, as the reserve answer named it")
    reason: Annotated[str, Field(min_length=1, max_length=500)] = "released"


class Released(Contract):
    task_id: UUID
    released: bool
    status: str | None
    """The reservation's status after the call (None when there was none)."""


class ApproveTask(Contract):
    """Let a task past require-approval: the approval gates of the budgets ``approver_scope`` holds
    (all of them when it is None: the operator)."""

    task_id: UUID
    actor: Actor
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    scope: Scope | None = Field(
        default=None,
        description="the task's scope, when the approver knows it (the gateway does, from the task's decision):"
        " kept in the audit log, so the approval shows in that scope's audit",
    )
    approver_scope: Scope | None = Field(
        default=None,
        description="the approving API key's scope (the gateway sets it; never sent over HTTP): the approval lifts"
        " the approval gates of the budgets this scope holds (an org's: every budget of the org; a team's or a"
        " user's: its own), and is refused (forbidden) while a gate in force on the task's chain (``scope``, then"
        " required) is outside it. None: the operator, every gate",
    )


class Approval(Contract):
    task_id: UUID
    actor: str
    reason: str
    created_at: datetime
    scope: Scope | None = None
    approver_scope: Scope | None = None
    """Whose budgets' gates it lifts (None: every gate)."""


class ExtendBudget(Contract):
    budget_id: UUID
    amount_usd: PositiveUsd
    until: UtcDatetime
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    actor: Actor


class GetBudgetStatus(ScopedContract):
    """One scope (``scope_type`` + ``scope_id``), or a whole chain (``scope``: user → team → org)."""

    scope_type: ScopeType | None = None
    scope_id: ScopeId | None = None
    scope: Scope | None = None

    @model_validator(mode="after")
    def _one_way(self) -> GetBudgetStatus:
        if (self.scope_type is not None) == (self.scope is not None):
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
    mode: BudgetMode
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


class ListAlerts(ScopedContract):
    """The budget alerts fired, newest first: one per budget, period and threshold reached."""

    org_id: Identifier | None = Field(default=None, description="only alerts of this org's budgets")
    scope_type: ScopeType | None = None
    scope_id: ScopeId | None = Field(default=None, description="only alerts of budgets on exactly this scope")
    budget_id: UUID | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class FiredAlert(Contract):
    """A threshold a budget reached in a period (the BudgetAlert published then has the same id)."""

    alert_event_id: UUID
    budget_id: UUID
    budget_name: str
    scope_type: ScopeType
    scope_id: str
    period_start: datetime
    threshold_percent: int
    actions: list[str]
    """The threshold's actions, as the budget has them now."""
    fired_at: datetime
    cause_event_id: UUID | None
    """What reached the threshold: the CostRecorded, or the CostAdjusted (its adjustment id) that
    corrected a cost upwards."""


class AlertHistory(Contract):
    alerts: list[FiredAlert]


class ListBudgetAudit(ScopedContract):
    """The budget audit log, newest first: who created, changed, extended or deleted a budget, or
    approved a task, and the budget (or approval) before and after."""

    org_id: Identifier | None = Field(default=None, description="only rows of this org's budgets and tasks")
    scope_type: ScopeType | None = None
    scope_id: ScopeId | None = Field(
        default=None,
        description="only rows of budgets on exactly this scope, and approvals of tasks whose scope includes it",
    )
    budget_id: UUID | None = None
    task_id: UUID | None = None
    before_id: int | None = Field(default=None, ge=1, le=2**63 - 1, description="only rows older than this one")
    limit: int = Field(default=100, ge=1, le=1000)


class AuditEntry(Contract):
    id: int
    at: datetime
    actor: str
    """Who: ``key:<id> (<name>)`` for a change made over HTTP, the CLI's ``--by`` (user@host) on the bus."""
    action: str
    budget_id: UUID | None
    task_id: UUID | None
    scope_type: ScopeType | None
    """The budget's scope (None for an approval)."""
    scope_id: str | None
    task_scope: Scope | None = None
    """An approval's task scope, when the approver named it."""
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class BudgetAuditLog(Contract):
    entries: list[AuditEntry]
