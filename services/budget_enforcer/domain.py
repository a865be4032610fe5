"""Pure budget rules: periods in a time zone, thresholds and their actions, admission.

Nothing here does I/O; the repository loads budgets and totals under row locks and asks these
functions what to do.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from routewise.contracts.events import Scope, Tier
from routewise.contracts.vocabulary import Period, Refusal, ThresholdAction


@dataclass(frozen=True)
class Threshold:
    percent: int
    actions: tuple[ThresholdAction, ...]
    restricted_models: tuple[str, ...] = ()
    max_tier: Tier | None = None


DEFAULT_THRESHOLDS: tuple[Threshold, ...] = (
    Threshold(50, (ThresholdAction.notify,)),
    Threshold(80, (ThresholdAction.notify, ThresholdAction.restrict_models), max_tier=Tier.versatile),
    Threshold(95, (ThresholdAction.notify, ThresholdAction.require_approval)),
    Threshold(100, (ThresholdAction.block,)),
)


def period_bounds(period: Period, tz: str, start: datetime, at: datetime) -> tuple[datetime, datetime | None]:
    """The period of ``at`` (UTC bounds, end exclusive), by the calendar of time zone ``tz``.

    ``total`` runs from the budget's start and never ends. Calendar periods begin at local
    midnight (Monday for weeks, the 1st for months, Jan/Apr/Jul/Oct for quarters), so a day
    across a DST change is 23 or 25 hours long.
    """
    if period is Period.total:
        return start, None
    zone = ZoneInfo(tz)
    local = at.astimezone(zone).date()
    if period is Period.daily:
        first, following = local, local + timedelta(days=1)
    elif period is Period.weekly:
        first = local - timedelta(days=local.weekday())
        following = first + timedelta(days=7)
    elif period is Period.monthly:
        first = local.replace(day=1)
        following = _add_months(first, 1)
    else:
        first = local.replace(month=(local.month - 1) // 3 * 3 + 1, day=1)
        following = _add_months(first, 3)
    return _midnight(first, zone), _midnight(following, zone)


def _add_months(day: date, months: int) -> date:
    index = day.month - 1 + months
    return day.replace(year=day.year + index // 12, month=index % 12 + 1, day=1)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def percent_of(amount: Decimal, limit: Decimal) -> Decimal:
    """Exact: thresholds compare against this; round only to show it (99.995 % is not 100 %)."""
    return amount / limit * 100 if limit > 0 else Decimal(100)


def shown(percent: Decimal) -> Decimal:
    """A percentage for people and messages: two decimals."""
    return percent.quantize(Decimal("0.01"))


def in_force(thresholds: tuple[Threshold, ...], percent: Decimal) -> list[Threshold]:
    return [t for t in thresholds if percent >= t.percent]


@dataclass
class Restrictions:
    """What the budgets in force allow, merged over a scope chain."""

    restricted_models: set[str] = field(default_factory=set)
    max_tier: Tier | None = None
    max_cost_per_request: Decimal | None = None
    model_downgrading: bool = False
    approval_required: bool = False
    block_non_essential: bool = False

    def add(self, threshold: Threshold) -> None:
        actions = set(threshold.actions)
        if ThresholdAction.restrict_models in actions:
            self.model_downgrading = True
            self.restricted_models.update(threshold.restricted_models)
            if threshold.max_tier is not None:
                self.cap_tier(threshold.max_tier)
        if ThresholdAction.downgrade in actions:
            self.model_downgrading = True
        if ThresholdAction.require_approval in actions:
            self.approval_required = True
        if ThresholdAction.block in actions:
            self.block_non_essential = True

    def cap_tier(self, tier: Tier) -> None:
        if self.max_tier is None or tier.rank < self.max_tier.rank:
            self.max_tier = tier

    def cap_request(self, amount: Decimal | None) -> None:
        if amount is not None and (self.max_cost_per_request is None or amount < self.max_cost_per_request):
            self.max_cost_per_request = amount

    def allows(self, model: str, tier: Tier | None) -> bool:
        if model in self.restricted_models:
            return False
        return not (self.max_tier is not None and tier is not None and tier.rank > self.max_tier.rank)


@dataclass(frozen=True)
class BudgetState:
    """One budget in its current period, as the repository read it under lock."""

    budget_id: str
    name: str
    scope_type: str
    scope_id: str
    hard: bool
    limit: Decimal  # including active extensions
    spent: Decimal
    reserved: Decimal
    max_cost_per_request: Decimal | None
    thresholds: tuple[Threshold, ...]

    @property
    def used(self) -> Decimal:
        return self.spent + self.reserved

    @property
    def percent(self) -> Decimal:
        return percent_of(self.used, self.limit)


@dataclass(frozen=True)
class Verdict:
    admitted: bool
    reason: Refusal | None
    detail: str
    restrictions: Restrictions
    budget_id: str | None = None
    over_soft_limit: tuple[str, ...] = ()


Approver = Scope | None
"""Who approved a task: the scope of the API key that did, whose approval lifts the approval gates
of the budgets that scope holds (``Scope.holds``: an org's every budget of the org, a team's or a
user's its own) — or None, the operator, whose approval lifts every gate."""


def gated(state: BudgetState) -> bool:
    """Whether the budget's approval gate is in force (a require-approval threshold reached)."""
    own = Restrictions()
    for threshold in in_force(state.thresholds, state.percent):
        own.add(threshold)
    return own.approval_required


def lifts(approvers: Collection[Approver], state: BudgetState) -> bool:
    """Whether one of the task's approvals lifts this budget's approval gate."""
    return any(a is None or a.holds(state.scope_type, state.scope_id) for a in approvers)


def gates_outside(budgets: list[BudgetState], approver: Scope) -> list[BudgetState]:
    """The budgets of a task's chain whose approval gate is in force and that ``approver`` does not
    hold: its approval would not lift them (a team admin's approval, an org budget's gate)."""
    return [state for state in budgets if gated(state) and not lifts([approver], state)]


def admit(
    budgets: list[BudgetState], amount: Decimal, model: str, tier: Tier | None, *, approvers: Collection[Approver] = ()
) -> Verdict:
    """May a call estimated at ``amount`` on ``model`` go ahead under every budget of the chain?

    Checked per budget, narrowest scope first: the per-request cap, the actions in force at
    its current use (block, approval unless one of the task's ``approvers`` holds the budget,
    model restrictions), then — for hard budgets — that spend plus holds plus this amount stays
    within the limit. Soft budgets admit and report.
    """
    restrictions = Restrictions()
    for state in budgets:
        restrictions.cap_request(state.max_cost_per_request)
        for threshold in in_force(state.thresholds, state.percent):
            restrictions.add(threshold)
    soft_over: list[str] = []
    for state in budgets:
        where = f"{state.scope_type} {state.scope_id} budget {state.name!r}"
        if state.max_cost_per_request is not None and amount > state.max_cost_per_request:
            return Verdict(
                False,
                Refusal.over_request_cap,
                f"${amount} is over the ${state.max_cost_per_request} per-request cap of {where}",
                restrictions,
                state.budget_id,
            )
        own = Restrictions()
        for threshold in in_force(state.thresholds, state.percent):
            own.add(threshold)
        if own.block_non_essential and state.hard:
            return Verdict(
                False,
                Refusal.budget_exhausted,
                f"{where} is at {shown(state.percent)}% and blocks new calls",
                restrictions,
                state.budget_id,
            )
        if own.approval_required and not lifts(approvers, state):
            return Verdict(
                False,
                Refusal.approval_required,
                f"{where} is at {shown(state.percent)}%: this task needs an approval",
                restrictions,
                state.budget_id,
            )
        if not own.allows(model, tier):
            return Verdict(
                False,
                Refusal.model_restricted,
                f"{where} is at {shown(state.percent)}%: {model} is restricted",
                restrictions,
                state.budget_id,
            )
        if state.used + amount > state.limit:
            if state.hard:
                left = max(state.limit - state.used, Decimal(0))
                return Verdict(
                    False,
                    Refusal.budget_exhausted,
                    f"{where} has ${left} left of ${state.limit}; this call needs ${amount}",
                    restrictions,
                    state.budget_id,
                )
            soft_over.append(state.budget_id)
    return Verdict(True, None, "admitted", restrictions, over_soft_limit=tuple(soft_over))


def status_of(state: BudgetState) -> str:
    """ok, warning (only notify in force), critical (restrictions or approval), exceeded."""
    if state.used >= state.limit:
        return "exceeded"
    actions = {a for t in in_force(state.thresholds, state.percent) for a in t.actions}
    if ThresholdAction.block in actions:
        return "exceeded"
    if actions & {ThresholdAction.restrict_models, ThresholdAction.downgrade, ThresholdAction.require_approval}:
        return "critical"
    if actions:
        return "warning"
    return "ok"


SEVERITY = ("ok", "warning", "critical", "exceeded")
