"""Event and request contracts: what is accepted, what is refused, how money travels."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from routewise.contracts.budget import GetBudgetStatus
from routewise.contracts.events import (
    MAX_CALL_COST_USD,
    CostRecorded,
    FeedbackRecorded,
    ModelSelected,
    Scope,
    TaskArrived,
)
from routewise.contracts.metrics import CostSavings
from tests.helpers import a_selection


def cost(**overrides: object) -> CostRecorded:
    fields: dict[str, object] = {
        "task_id": uuid.uuid4(),
        "scope": {"org_id": "acme"},
        "model": "gpt-4o",
        "provider": "openai",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_usd": "0.001",
    }
    fields.update(overrides)
    return CostRecorded.model_validate(fields)


def test_money_travels_as_an_exact_decimal_string() -> None:
    event = cost(cost_usd=Decimal("0.000000123456"))
    data = json.loads(event.model_dump_json())
    assert data["cost_usd"] == "0.000000123456"
    assert CostRecorded.model_validate_json(event.model_dump_json()).cost_usd == Decimal("0.000000123456")


@given(st.decimals(min_value=0, max_value=MAX_CALL_COST_USD, places=12, allow_nan=False, allow_infinity=False))
def test_any_amount_survives_a_round_trip_exactly(amount: Decimal) -> None:
    event = cost(cost_usd=amount)
    assert CostRecorded.model_validate_json(event.model_dump_json()).cost_usd == amount


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cost_usd": "-0.01"}, "greater than or equal to 0"),
        ({"cost_usd": "NaN"}, "finite"),
        ({"input_tokens": -1}, "greater than or equal to 0"),
        ({"cached_input_tokens": 20}, "cache_write_tokens cannot exceed input_tokens"),
        ({"success": False}, "a failed call needs an error_type"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
        ({"occurred_at": "2026-01-01T00:00:00"}, "time zone"),
        ({"schema_version": 2}, "newer than this consumer understands"),
        ({"scope": {"org_id": "has space"}}, "String should match pattern"),
    ],
)
def test_a_bad_cost_is_refused_with_a_clear_reason(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        cost(**overrides)


def test_a_decision_s_estimates_are_bounded_like_a_call_and_savings_sums_fit_their_contract() -> None:
    selection = a_selection(Scope(org_id="acme"), "gpt-4o", uuid.uuid4(), "qa", "normal").model_dump()
    for name in ("estimated_cost_usd", "baseline_cost_usd"):
        with pytest.raises(ValidationError, match="less than or equal to 10000"):
            ModelSelected.model_validate({**selection, name: "10000.01"})
    # a period's saving over many tasks: as wide as the ledger's sums (numeric(30, 12))
    big = Decimal("7998092826819557.4")
    assert (
        CostSavings(
            total_saved=big, percent_saved=None, intelligent_cost=0, baseline_cost=big, period_days=7, tasks=1
        ).total_saved
        == big
    )


def test_timestamps_are_normalised_to_utc() -> None:
    event = cost(occurred_at="2026-03-29T03:30:00+02:00")
    assert event.occurred_at == datetime.fromisoformat("2026-03-29T01:30:00+00:00")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "exactly one of prompt or messages"),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "exactly one of prompt or messages"),
        ({"prompt": "  \n"}, "prompt is empty"),
        ({"messages": [{"role": "user", "content": " "}]}, "messages carry no text"),
        ({"prompt": "x", "task_type": "Not A Type"}, "String should match pattern"),
    ],
)
def test_a_task_needs_text(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TaskArrived.model_validate({"scope": {"org_id": "acme"}, **fields})


def test_messages_are_joined_in_order() -> None:
    task = TaskArrived(
        scope=Scope(org_id="a"), messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    )
    assert task.text() == "be brief\nhi"


def test_events_are_immutable_and_carry_identity() -> None:
    a, b = cost(), cost()
    assert a.event_id != b.event_id
    assert a.occurred_at.tzinfo is not None
    with pytest.raises(ValidationError):
        a.model_copy(update={}).__setattr__("cost_usd", Decimal(0))


def test_scope_chain_goes_from_narrowest_to_org_and_names_each_scope_within_its_org() -> None:
    scope = Scope(org_id="acme", team_id="core", user_id="ana")
    assert scope.chain() == [("user", "acme/ana"), ("team", "acme/core"), ("org", "acme")]
    assert Scope(org_id="globex", team_id="core").chain()[0] == ("team", "globex/core")


@pytest.mark.parametrize(
    ("scope_type", "scope_id", "problem"),
    [
        ("team", "core", "ORG/ID"),
        ("user", "ana", "ORG/ID"),
        ("org", "acme/core", "has no '/'"),
        ("team", "acme/core/x", "pattern"),
        ("team", "/core", "pattern"),
    ],
)
def test_a_scope_below_the_org_is_named_within_its_org(scope_type: str, scope_id: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        GetBudgetStatus(scope_type=scope_type, scope_id=scope_id)
    assert GetBudgetStatus(scope_type="team", scope_id="acme/core").scope_id == "acme/core"


def test_feedback_quality_is_bounded() -> None:
    with pytest.raises(ValidationError):
        FeedbackRecorded(task_id=uuid.uuid4(), scope=Scope(org_id="a"), model="m", quality=1.5)


def test_model_selected_schema_shows_money_as_string() -> None:
    schema = ModelSelected.model_json_schema(mode="serialization")
    assert schema["properties"]["estimated_cost_usd"]["type"] == "string"


def test_one_vocabulary_says_which_error_codes_are_worth_asking_again() -> None:
    from routewise.contracts.vocabulary import ErrorCode, is_permanent

    assert {c for c in ErrorCode if not is_permanent(c)} == {"unavailable", "timeout", "internal"}
    assert is_permanent("unknown_price") and is_permanent("ambiguous_model")
    assert not is_permanent("rate_limited")  # a code this version does not know: try again later


@pytest.mark.parametrize("field", ["model", "provider", "error_type"])
def test_no_text_of_a_contract_may_carry_nul(field: str) -> None:
    """Postgres cannot store NUL: one service failed on what the others applied."""
    overrides: dict[str, object] = {field: "gpt\x00-4o"}
    if field == "error_type":
        overrides["success"] = False
    with pytest.raises(ValidationError, match="NUL"):
        cost(**overrides)
