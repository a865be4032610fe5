"""Pure budget rules: periods in time zones (across DST), admission, status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routewise.contracts.events import Scope, Tier
from routewise.contracts.vocabulary import Period, Refusal, ThresholdAction
from routewise.services.budget_enforcer.domain import (
    DEFAULT_THRESHOLDS,
    BudgetState,
    Threshold,
    admit,
    gates_outside,
    period_bounds,
    status_of,
)

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Chatham"]
START = datetime(2020, 1, 1, tzinfo=UTC)


@given(
    st.sampled_from([Period.daily, Period.weekly, Period.monthly, Period.quarterly]),
    st.sampled_from(ZONES),
    st.datetimes(min_value=datetime(2021, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)),
)
def test_a_period_contains_its_moment_starts_at_local_midnight_and_tiles_time(
    period: Period, tz: str, at: datetime
) -> None:
    start, end = period_bounds(period, tz, START, at)
    assert end is not None
    assert start <= at < end
    local = start.astimezone(ZoneInfo(tz))
    assert (local.hour, local.minute, local.second) == (0, 0, 0)
    if period is Period.weekly:
        assert local.weekday() == 0
    if period in (Period.monthly, Period.quarterly):
        assert local.day == 1
    if period is Period.quarterly:
        assert local.month in (1, 4, 7, 10)
    following_start, _ = period_bounds(period, tz, START, end)
    assert following_start == end  # periods are contiguous: no gap, no overlap
    _, previous_end = period_bounds(period, tz, START, start - timedelta(microseconds=1))
    assert previous_end == start


@pytest.mark.parametrize(
    ("tz", "day", "hours"),
    [
        ("Europe/Paris", datetime(2026, 3, 29, 12, tzinfo=UTC), 23),  # clocks go forward
        ("Europe/Paris", datetime(2026, 10, 25, 12, tzinfo=UTC), 25),  # clocks go back
        ("America/New_York", datetime(2026, 3, 8, 17, tzinfo=UTC), 23),
        ("America/New_York", datetime(2026, 11, 1, 17, tzinfo=UTC), 25),
        ("Europe/Paris", datetime(2026, 6, 1, 12, tzinfo=UTC), 24),
    ],
)
def test_a_day_across_a_dst_change_is_23_or_25_hours(tz: str, day: datetime, hours: int) -> None:
    start, end = period_bounds(Period.daily, tz, START, day)
    assert end is not None
    assert end - start == timedelta(hours=hours)


def test_a_late_evening_cost_in_paris_belongs_to_the_local_day() -> None:
    at = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)  # already 1 December, 00:30, in Paris
    start, end = period_bounds(Period.monthly, "Europe/Paris", START, at)
    assert start == datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # 1 December 00:00 Paris
    assert end == datetime(2026, 12, 31, 23, 0, tzinfo=UTC)


def test_a_total_budget_runs_from_its_start_for_ever() -> None:
    assert period_bounds(Period.total, "Europe/Paris", START, datetime(2030, 1, 1, tzinfo=UTC)) == (START, None)


def state(
    spent: str,
    limit: str = "10",
    *,
    hard: bool = True,
    reserved: str = "0",
    thresholds: tuple[Threshold, ...] = DEFAULT_THRESHOLDS,
    cap: str | None = None,
    name: str = "b",
    scope: tuple[str, str] = ("org", "acme"),
) -> BudgetState:
    return BudgetState(
        name,
        name,
        *scope,
        hard,
        Decimal(limit),
        Decimal(spent),
        Decimal(reserved),
        Decimal(cap) if cap else None,
        thresholds,
    )


def test_a_hard_budget_admits_up_to_its_limit_and_not_a_cent_more() -> None:
    only_limit = (Threshold(100, (ThresholdAction.notify,)),)
    assert admit([state("9", thresholds=only_limit)], Decimal("1"), "m", None).admitted
    refused = admit([state("9", thresholds=only_limit)], Decimal("1.01"), "m", None)
    assert (refused.admitted, refused.reason) == (False, Refusal.budget_exhausted)
    assert "$1 left of $10" in refused.detail


def test_a_soft_budget_admits_past_its_limit_and_says_so() -> None:
    verdict = admit([state("9.5", hard=False, thresholds=())], Decimal(2), "m", None)
    assert verdict.admitted
    assert verdict.over_soft_limit == ("b",)


def test_the_narrowest_budget_refuses_first_and_every_budget_counts() -> None:
    team, org = state("1", "5", name="team"), state("99", "100", name="org", thresholds=())
    verdict = admit([team, org], Decimal(2), "m", None)
    assert (verdict.admitted, verdict.budget_id) == (False, "org")  # the team has room, the org has not


@pytest.mark.parametrize(
    ("spent", "approved", "model", "tier", "reason"),
    [
        ("9.6", False, "m", None, Refusal.approval_required),  # 96 %: require-approval in force
        ("9.6", True, "m", None, None),  # approved: allowed (within the limit)
        ("8.5", False, "m", Tier.heavy, Refusal.model_restricted),  # 85 %: tiers above versatile restricted
        ("8.5", False, "m", Tier.versatile, None),
        ("10", True, "m", None, Refusal.budget_exhausted),  # 100 %: blocked, approval or not
    ],
)
def test_default_thresholds(spent: str, approved: bool, model: str, tier: Tier | None, reason: Refusal | None) -> None:
    verdict = admit([state(spent)], Decimal("0.01"), model, tier, approvers=[OPERATOR] if approved else [])
    assert verdict.reason == reason
    assert verdict.admitted is (reason is None)


OPERATOR = None
"""An approval made on the bus (the CLI): it lifts every gate."""
GATE = (Threshold(10, (ThresholdAction.require_approval,)),)
ORG_GATE = state("5", name="org", thresholds=GATE)
TEAM_GATE = state("5", name="team", thresholds=GATE, scope=("team", "acme/platform"))
USER_GATE = state("5", name="user", thresholds=GATE, scope=("user", "acme/ana"))
ORG_KEY, TEAM_KEY = Scope(org_id="acme"), Scope(org_id="acme", team_id="platform")
USER_KEY = Scope(org_id="acme", team_id="platform", user_id="ana")


@pytest.mark.parametrize(
    ("chain", "approvers", "refused_by"),
    [
        ([TEAM_GATE, ORG_GATE], [], "team"),
        ([TEAM_GATE, ORG_GATE], [TEAM_KEY], "org"),  # a team admin's approval does not lift the org's gate
        ([TEAM_GATE, ORG_GATE], [ORG_KEY], None),  # an org admin's lifts every gate of its org
        ([TEAM_GATE, ORG_GATE], [TEAM_KEY, ORG_KEY], None),
        ([TEAM_GATE, ORG_GATE], [OPERATOR], None),
        ([TEAM_GATE], [TEAM_KEY], None),
        ([TEAM_GATE], [Scope(org_id="acme", team_id="research")], "team"),  # a sibling team's
        ([TEAM_GATE], [Scope(org_id="globex")], "team"),  # another org's
        ([USER_GATE, TEAM_GATE], [TEAM_KEY], "user"),  # a user's budget is not its team's
        ([USER_GATE, TEAM_GATE], [USER_KEY, TEAM_KEY], None),
    ],
)
def test_an_approval_lifts_the_gates_of_the_budgets_its_approver_holds(
    chain: list[BudgetState], approvers: list[Scope | None], refused_by: str | None
) -> None:
    verdict = admit(chain, Decimal("0.01"), "m", None, approvers=approvers)
    assert (verdict.reason, verdict.budget_id) == (
        (Refusal.approval_required, refused_by) if refused_by else (None, None)
    )


def test_the_gates_in_force_an_approver_does_not_hold() -> None:
    below = state("0.5", name="org", thresholds=GATE)  # 5 %: the org's gate is not in force
    assert [s.name for s in gates_outside([TEAM_GATE, ORG_GATE], TEAM_KEY)] == ["org"]
    assert gates_outside([TEAM_GATE, below], TEAM_KEY) == []
    assert gates_outside([TEAM_GATE, ORG_GATE], ORG_KEY) == []
    assert [s.name for s in gates_outside([USER_GATE, TEAM_GATE], Scope(org_id="globex"))] == ["user", "team"]


def test_the_per_request_cap_and_a_model_list() -> None:
    listed = (Threshold(10, (ThresholdAction.restrict_models,), restricted_models=("claude-opus-4-1",)),)
    assert admit([state("0", cap="0.5")], Decimal("0.51"), "m", None).reason is Refusal.over_request_cap
    restricted = admit([state("2", thresholds=listed)], Decimal("0.1"), "claude-opus-4-1", Tier.complex)
    assert restricted.reason is Refusal.model_restricted
    assert restricted.restrictions.restricted_models == {"claude-opus-4-1"}
    assert admit([state("2", thresholds=listed)], Decimal("0.1"), "gpt-5", Tier.complex).admitted


def test_status_follows_the_actions_in_force() -> None:
    assert [status_of(state(s)) for s in ("1", "6", "8.5", "9.6", "10")] == [
        "ok",
        "warning",
        "critical",
        "critical",
        "exceeded",
    ]
