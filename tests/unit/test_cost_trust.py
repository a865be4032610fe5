"""The rules of which reported costs are trusted, and what an adjustment changes: pure functions."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from pydantic import ValidationError

from routewise.client import as_reported
from routewise.contracts.catalog import default_catalog
from routewise.contracts.cost import AdjustCost
from routewise.contracts.events import (
    MAX_CALL_COST_USD,
    CostAdjusted,
    CostRecorded,
    CostRefusal,
    CostReported,
    Scope,
)
from routewise.services.cost_predictor import trust
from routewise.services.cost_predictor.pricing import PriceBook
from routewise.services.cost_predictor.trust import Plausibility, judge

D = Decimal
RULE = Plausibility(ratio=D(10), floor_usd=D("0.01"))


@pytest.mark.parametrize(
    ("reported", "expected", "accepted"),
    [
        ("1", "1", True),
        ("10", "1", True),  # exactly the ratio: still plausible
        ("10.000001", "1", False),
        ("0.1", "1", True),  # exactly 1/ratio
        ("0.099999", "1", False),
        ("0", "1", False),  # nothing for a call that cost a dollar
        ("0", "0", True),
        ("0.01", "0", True),  # within the floor of a call that cost nothing
        ("0.010001", "0", False),
        ("0.000001", "0.00000005", True),  # 20x, a tiny call rounded up to a millionth: within the floor
        ("0.01", "0.0000045", True),  # rounded up to the cent
        ("0.5", "0.0000045", False),
    ],
)
def test_the_ratio_and_its_floor(reported: str, expected: str, accepted: bool) -> None:
    verdict = judge(D(reported), D(expected), RULE)
    assert verdict.accepted is accepted
    assert verdict.self_priced is False
    assert verdict.reason is (None if accepted else CostRefusal.implausible_cost)


def test_the_refusal_says_how_far_off_it_is() -> None:
    over = judge(D(10_000), D("0.0000045"), RULE)
    assert over.detail == "$10000 is more than 10 times what its tokens cost ($0.0000045)"
    under = judge(D("0.5"), D(20), RULE)
    assert under.detail == "$0.5 is less than 1/10 of what its tokens cost ($20)"


def test_the_floor_and_ratio_are_settings() -> None:
    strict = Plausibility(ratio=D(2), floor_usd=D(0))
    assert not judge(D("0.0000021"), D("0.000001"), strict).accepted
    assert judge(D("0.000002"), D("0.000001"), strict).accepted


def test_a_failed_call_may_cost_less_than_its_tokens_but_not_more() -> None:
    assert judge(D(0), D(5), RULE, failed=True).accepted
    assert not judge(D(0), D(5), RULE).accepted
    assert not judge(D(60), D(5), RULE, failed=True).accepted


def test_an_unknown_model_is_refused() -> None:
    verdict = judge(D("0.001"), None, RULE)
    assert not verdict.accepted
    assert verdict.reason is CostRefusal.unknown_model


def test_self_priced_accepts_what_would_be_refused_and_says_why() -> None:
    rule = Plausibility(ratio=D(10), floor_usd=D("0.01"), allow_self_priced=True)
    unknown = judge(D("0.5"), None, rule)
    assert (unknown.accepted, unknown.self_priced, unknown.reason) == (True, True, CostRefusal.unknown_model)
    far = judge(D(50), D(1), rule)
    assert (far.accepted, far.self_priced, far.reason) == (True, True, CostRefusal.implausible_cost)
    plausible = judge(D(2), D(1), rule)
    assert (plausible.accepted, plausible.self_priced) == (True, False)


def test_more_than_a_call_may_cost_is_refused_even_self_priced() -> None:
    rule = Plausibility(allow_self_priced=True)
    for expected in (None, D(9_000)):
        verdict = judge(D(10_000_000), expected, rule)
        assert (verdict.accepted, verdict.reason) == (False, CostRefusal.implausible_cost)
        assert "more than one call may cost ($10000)" in verdict.detail
    assert judge(MAX_CALL_COST_USD, D(9_000), rule).accepted


def a_report(**fields: object) -> CostReported:
    return CostReported.model_validate(
        {
            "task_id": uuid.uuid4(),
            "scope": Scope(org_id="acme"),
            "model": "gpt-4o-mini",
            "provider": "openai",
            "input_tokens": 10,
            "output_tokens": 5,
            "cost_usd": D(10_000_000),
            **fields,
        }
    )


def test_the_price_book_gives_the_expected_cost() -> None:
    book = PriceBook(default_catalog())
    expected, why = trust.expected_cost(book, a_report())
    assert expected == D("0.0000045") and why == ""  # 10 x $0.15 + 5 x $0.60 per million
    assert trust.expected_cost(book, a_report(provider="OpenAI"))[0] == expected  # providers are lowercase ids
    unknown, why = trust.expected_cost(book, a_report(model="no-such-model-anywhere"))
    assert unknown is None and "no price is known" in why
    wrong_provider, why = trust.expected_cost(book, a_report(provider="anthropic"))
    assert wrong_provider is None and "no price is known for model 'anthropic/gpt-4o-mini'" in why
    odd_provider, why = trust.expected_cost(book, a_report(provider="Acme GPU"))
    assert odd_provider is None and "'Acme GPU' is not a provider" in why


def test_an_accepted_report_is_the_same_call_under_an_id_of_its_own() -> None:
    report = a_report(cost_usd=D("0.00001"), attempt=2, latency_ms=120.0)
    recorded = trust.recorded(report, self_priced=True)
    assert recorded.event_id == trust.recorded_id(report.event_id) != report.event_id
    assert recorded.reported_event_id == report.event_id and recorded.self_priced
    assert recorded.occurred_at == report.occurred_at  # its budget period is the call's
    same = {"task_id", "scope", "model", "provider", "input_tokens", "output_tokens", "cost_usd", "attempt"}
    assert recorded.model_dump(include=same) == report.model_dump(include=same)
    assert trust.recorded(report, self_priced=True) == recorded  # the same on a redelivery


def test_a_report_may_name_any_amount_a_recorded_cost_may_not() -> None:
    assert a_report().cost_usd == D(10_000_000)
    with pytest.raises(ValidationError, match="less than or equal to 10000"):
        CostRecorded.model_validate(a_report().model_dump(exclude={"event_id"}))


def test_the_sdk_reports_a_recorded_cost_under_its_own_id() -> None:
    cost = CostRecorded.model_validate(a_report(cost_usd=D(1)).model_dump())
    report = as_reported(cost)
    assert isinstance(report, CostReported) and report.event_id == cost.event_id
    with pytest.raises(ValueError, match="set by cost-predictor"):
        as_reported(cost.model_copy(update={"self_priced": True}))


@pytest.mark.parametrize(
    ("current", "new", "void", "delta"),
    [("0.5", "0.2", False, "-0.3"), ("0.2", "0.5", False, "0.3"), ("0.5", None, True, "-0.5")],
)
def test_an_adjustment_moves_the_cost_by_its_delta(current: str, new: str | None, void: bool, delta: str) -> None:
    change = trust.adjustment(D(current), None if new is None else D(new), void=void)
    assert change.delta == D(delta)
    assert change.cost == (D(0) if void else D(new or 0))


def test_an_adjustment_that_changes_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match=r"already \$0.5"):
        trust.adjustment(D("0.5"), D("0.50"), void=False)
    with pytest.raises(ValueError, match="already void"):
        trust.adjustment(D(0), None, void=True)


def test_an_adjustment_request_is_a_correction_or_a_void() -> None:
    base = {"task_id": uuid.uuid4(), "reason": "duplicate", "actor": "ana"}
    AdjustCost.model_validate({**base, "cost_usd": "0.1"})
    AdjustCost.model_validate({**base, "void": True})
    for wrong in ({}, {"cost_usd": "0.1", "void": True}):
        with pytest.raises(ValidationError, match="either cost_usd"):
            AdjustCost.model_validate({**base, **wrong})
    with pytest.raises(ValidationError, match="at most 500"):
        AdjustCost.model_validate({**base, "void": True, "reason": "x" * 501})


def test_cost_adjusted_keeps_its_arithmetic() -> None:
    fields = {
        "task_id": uuid.uuid4(),
        "attempt": 1,
        "scope": Scope(org_id="acme"),
        "model": "gpt-4o",
        "provider": "openai",
        "cost_event_id": uuid.uuid4(),
        "recorded_at": "2025-01-01T00:00:00Z",
        "sequence": 1,
        "previous_cost_usd": "0.5",
        "reason": "r",
        "actor": "a",
    }
    CostAdjusted.model_validate({**fields, "cost_usd": "0", "delta_usd": "-0.5", "void": True})
    with pytest.raises(ValidationError, match="delta_usd must be"):
        CostAdjusted.model_validate({**fields, "cost_usd": "0.2", "delta_usd": "0.3"})
    with pytest.raises(ValidationError, match="a void sets the cost to 0"):
        CostAdjusted.model_validate({**fields, "cost_usd": "0.2", "delta_usd": "-0.3", "void": True})
