"""The gateway's rules without I/O: what a request asks for, what a rejection answers, what a call cost."""

from __future__ import annotations

from decimal import Decimal

import pytest

from routewise.contracts.catalog import default_catalog
from routewise.contracts.events import RejectionReason, Scope
from routewise.pricing import PriceBook
from routewise.services.gateway.domain import (
    DEFAULT_OUTPUT_CAP,
    REJECTIONS,
    BadRequest,
    Target,
    Usage,
    cost_of,
    knobs_from,
    messages_of,
    rejection_message,
    target_of,
    task_for,
    worst_case,
)

CATALOG_IDS = {m.id for m in default_catalog().models}
HELLO = {"messages": [{"role": "user", "content": "hello"}]}


def test_knobs_come_from_the_body_metadata_and_headers_a_header_winning() -> None:
    body = {
        "routewise": {"task_type": "code", "quality_bias": 0.2},
        "metadata": {"routewise_min_quality": "0.6", "routewise_quality_bias": "0.9", "other": "x"},
    }
    headers = {"x-routewise-quality-bias": "0.7", "x-routewise-allowed-providers": "openai, anthropic"}

    knobs = knobs_from(body, headers)

    assert knobs.task_type == "code" and knobs.quality_bias == 0.7 and knobs.min_quality == 0.6
    assert knobs.allowed_providers == ["openai", "anthropic"]


@pytest.mark.parametrize(
    ("body", "headers", "says"),
    [
        ({"routewise": {"quality_bias": 2}}, {}, "quality_bias"),
        ({}, {"x-routewise-strategy": "random"}, "strategy"),
        ({"routewise": {"colour": "blue"}}, {}, "colour"),
        ({"routewise": "fast"}, {}, "routewise must be an object"),
        ({}, {"x-routewise-max-cost-usd": "-1"}, "max_cost_usd"),
    ],
)
def test_a_knob_out_of_range_is_a_bad_request_naming_it(body: dict, headers: dict, says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        knobs_from(body, headers)


def test_model_names_routing_a_policy_or_one_model() -> None:
    assert target_of("routewise/auto", CATALOG_IDS) == Target()
    assert target_of("routewise/code", CATALOG_IDS) == Target(policy="code")
    assert target_of("gpt-4o", CATALOG_IDS) == Target(forced="gpt-4o")
    for bad in ("gpt-nine", "routewise/Not A Policy", "", None):
        with pytest.raises(BadRequest) as refused:
            target_of(bad, CATALOG_IDS)
        assert refused.value.param == "model"


def test_messages_keep_their_text_and_map_openai_roles() -> None:
    messages = messages_of(
        {
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "what is"}, {"type": "image_url"}]},
                {"role": "assistant", "content": None, "tool_calls": []},
            ]
        }
    )

    assert [(m.role, m.content) for m in messages] == [("system", "be brief"), ("user", "what is"), ("assistant", "")]
    for bad in ({"messages": []}, {"messages": [{"role": "robot", "content": "x"}]}, {"messages": [{"role": "user"}]}):
        with pytest.raises(BadRequest):
            messages_of(bad)


def test_a_task_carries_the_forced_model_and_the_output_cap() -> None:
    task = task_for({**HELLO, "max_tokens": 300}, knobs_from({}, {}), Target(forced="gpt-4o"), Scope(org_id="acme"))

    assert task.constraints.allowed_models == ["gpt-4o"] and task.constraints.max_output_tokens == 300
    assert task.policy is None and task.task_type == "normal" and task.scope.org_id == "acme"
    # without a cap of its own, a request gets the default: every call's hold covers its worst case
    uncapped = task_for(HELLO, knobs_from({}, {}), Target(), Scope(org_id="acme"))
    assert uncapped.constraints.max_output_tokens == DEFAULT_OUTPUT_CAP


def test_rejections_answer_with_statuses_clients_handle_and_say_how_to_approve() -> None:
    assert {reason: REJECTIONS[reason].status for reason in RejectionReason} == {
        RejectionReason.budget_exhausted: 402,
        RejectionReason.approval_required: 403,
        RejectionReason.over_request_cap: 422,
        RejectionReason.no_model_within_constraints: 422,
        RejectionReason.invalid_request: 400,
        RejectionReason.unavailable: 503,
    }
    said = rejection_message(RejectionReason.approval_required, "needs approval", "T-1")
    assert "routewise budgets approve T-1" in said


def test_a_cost_is_the_price_books_for_the_reported_usage_cached_input_cheaper() -> None:
    book = PriceBook(default_catalog())
    usage = Usage.reported(
        {"prompt_tokens": 2000, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 1024}}
    )

    assert usage == Usage(2000, 100, 1024)
    assert cost_of(book, "gpt-4o", usage) < cost_of(book, "gpt-4o", Usage(2000, 100))
    # gpt-4o: $2.50 per million input tokens, $10 per million output tokens
    assert worst_case(book, "gpt-4o", 1000, 500) == Decimal("0.0025") + Decimal("0.005")
    assert Usage.reported(None) is None and Usage.reported({"prompt_tokens": 3}) is None
