"""The response cache's rules without I/O: who uses it, what its key covers, and answers as streams."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from routewise.contracts.events import CostRecorded, Scope
from routewise.services.gateway.cache import Assembler, key_of, replay, wanted
from routewise.services.gateway.domain import BadRequest, Knobs, knobs_from

BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "hello"}], "temperature": 0.2, "max_tokens": 50}
ANSWER: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Blue."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}


def key(body: dict[str, Any] = BODY, org: str = "acme", target: str = "routewise/auto", **knobs: Any) -> bytes:
    return key_of(org, target, body, Knobs(**knobs))


@pytest.mark.parametrize(
    ("header", "body", "org_default", "expected"),
    [
        (None, None, False, False),
        ("use", None, False, True),
        ("USE", None, False, True),
        ("no", None, True, False),
        (None, None, True, True),
        (None, {"cache": True}, False, True),
        (None, {"cache": False}, True, False),
        ("no", {"cache": True}, False, False),  # a header wins over the body
    ],
)
def test_who_uses_the_cache(header: str | None, body: dict[str, Any] | None, org_default: bool, expected: bool) -> None:
    knobs = knobs_from({"routewise": body} if body else {}, {"x-routewise-cache": header} if header else {})

    assert wanted(knobs, "acme", ["acme"] if org_default else []) is expected


def test_a_cache_header_that_says_neither_is_a_bad_request() -> None:
    with pytest.raises(BadRequest) as refused:
        knobs_from({}, {"x-routewise-cache": "maybe"})
    assert refused.value.param == "routewise.cache"


def test_the_key_covers_org_target_messages_knobs_and_parameters() -> None:
    base = key()

    assert len(base) == 32 and key() == base
    assert key(org="globex") != base
    assert key(target="routewise/cheap") != base and key(target="gpt-4o-mini") != base
    assert key({**BODY, "messages": [{"role": "user", "content": "hello!"}]}) != base
    assert key(quality_bias=0.9) != base
    for name, value in [("temperature", 0.9), ("max_tokens", 7), ("seed", 1), ("stop", ["\n"]), ("n", 2)]:
        assert key({**BODY, name: value}) != base, name
    assert key({**BODY, "tools": [{"type": "function", "function": {"name": "f"}}]}) != base
    assert key({**BODY, "response_format": {"type": "json_object"}}) != base


def test_the_key_leaves_out_what_does_not_change_the_answer() -> None:
    base = key()
    same = {
        **BODY,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "ada",
        "metadata": {"trace": "x"},
        "store": False,
    }

    assert key(same) == key(dict(reversed(list(BODY.items())))) == base
    assert key(cache=True) == base  # the opt-in itself is not part of the answer


def test_a_stored_answer_replays_as_a_stream_and_a_stream_assembles_into_it() -> None:
    chunks = replay(ANSWER, include_usage=True)

    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * 3
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Blue."}
    assert chunks[1]["choices"][0]["finish_reason"] == "stop" and chunks[2]["usage"] == ANSWER["usage"]
    assert "usage" not in replay(ANSWER, include_usage=False)[-1]
    assembler = Assembler()
    for chunk in chunks:
        assembler.add(chunk)
    assert assembler.answer() == ANSWER


def test_a_stream_cut_short_or_with_tool_calls_is_not_assembled() -> None:
    cut = Assembler()
    cut.add(replay(ANSWER, include_usage=False)[0])
    assert cut.answer() is None

    tools = Assembler()
    tools.add({"id": "x", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0}]}, "finish_reason": None}]})
    tools.add({"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    assert tools.answer() is None


def test_a_cache_hit_cost_is_zero_with_its_avoided_cost() -> None:
    common: dict[str, Any] = {
        "task_id": uuid4(),
        "scope": Scope(org_id="acme"),
        "model": "gpt-4o-mini",
        "provider": "openai",
        "input_tokens": 0,
        "output_tokens": 0,
    }
    hit = CostRecorded(**common, cost_usd=Decimal(0), cached=True, avoided_cost_usd=Decimal("0.0001"))
    assert hit.cached and hit.avoided_cost_usd == Decimal("0.0001")
    with pytest.raises(ValueError, match="no cost"):
        CostRecorded(**common, cost_usd=Decimal("0.01"), cached=True)
    with pytest.raises(ValueError, match="cache hit"):
        CostRecorded(**common, cost_usd=Decimal(0), avoided_cost_usd=Decimal(1))
