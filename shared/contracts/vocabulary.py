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

Refusal = Literal["budget_exhausted", "approval_required", "over_request_cap", "model_restricted"]
"""Why budget-enforcer refused a reservation."""

HealthState = Literal["healthy", "demoted", "probation"]
"""A model's health as performance-tracker sees it; a demoted model is never chosen."""

Window = Literal["1h", "24h", "7d", "all"]
"""The windows performance statistics are kept over."""


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
    unavailable = "unavailable"
    timeout = "timeout"
    internal = "internal"


TRANSIENT = frozenset({ErrorCode.unavailable, ErrorCode.timeout, ErrorCode.internal})
"""Codes that say "not now": the same request may succeed later (a service down, slow, or failing)."""


def is_permanent(code: str) -> bool:
    """Whether the same request can never succeed: asking again is pointless (every code but the
    transient ones, including codes this version does not know)."""
    return code not in TRANSIENT
