"""Each word the services share, defined once: scope types, budget periods and modes, threshold
actions, budget refusals and health, model health states, statistics windows, and the error
codes of request/reply with whether a caller may try again."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

ScopeType = Literal["org", "team", "user", "workspace"]
"""Who a budget, a spend or an alert is about (a task's scope: org, then team, user, workspace)."""

BudgetMode = Literal["hard", "soft"]
"""hard: reservations over the limit are refused; soft: admitted, and alerting."""

BudgetHealth = Literal["ok", "warning", "critical", "exceeded"]


HealthState = Literal["healthy", "demoted", "probation"]
"""A model's health as performance-tracker sees it; a demoted model is never chosen."""

Window = Literal["1h", "24h", "7d", "all"]
"""The windows performance statistics are kept over."""


class Refusal(StrEnum):
    """Why budget-enforcer refused a reservation."""

    budget_exhausted = "budget_exhausted"
    approval_required = "approval_required"
    over_request_cap = "over_request_cap"
    model_restricted = "model_restricted"
    already_settled = "already_settled"
    """The task's cost was recorded against its reservation: it cannot hold budget again."""


class Period(StrEnum):
    """A budget's period; boundaries are computed in the budget's own time zone."""

    daily = "daily"
    weekly = "weekly"
    monthly = "monthly"
    quarterly = "quarterly"
    total = "total"


class ThresholdAction(StrEnum):
    """What a budget threshold puts in force for the rest of its period."""

    notify = "notify"
    restrict_models = "restrict-models"
    downgrade = "downgrade"
    require_approval = "require-approval"
    block = "block"


class ErrorCode(StrEnum):
    """The ``code`` of an error reply (``{"error": {"code", "message", "details"}}``)."""

    invalid_request = "invalid_request"
    not_found = "not_found"
    unknown_model = "unknown_model"
    unknown_price = "unknown_price"
    ambiguous_model = "ambiguous_model"
    context_window_exceeded = "context_window_exceeded"
    unknown_policy = "unknown_policy"
    unknown_provider = "unknown_provider"
    task_rejected = "task_rejected"
    forbidden = "forbidden"
    """The bus user (or API key) may not do this: ask the operator for one that may."""
    unavailable = "unavailable"
    timeout = "timeout"
    internal = "internal"


PERMANENT = frozenset(
    {
        ErrorCode.invalid_request,
        ErrorCode.not_found,
        ErrorCode.unknown_model,
        ErrorCode.unknown_price,
        ErrorCode.ambiguous_model,
        ErrorCode.context_window_exceeded,
        ErrorCode.unknown_policy,
        ErrorCode.unknown_provider,
        ErrorCode.task_rejected,
        ErrorCode.forbidden,
    }
)
"""Codes that say "never, as asked": the same request cannot succeed, so a caller stops trying."""


def is_permanent(code: str) -> bool:
    """Whether the same request can never succeed. Every other code, one this version does not
    know included, is "not now" (a service down, slow, overloaded or failing): try again later."""
    return code in PERMANENT
