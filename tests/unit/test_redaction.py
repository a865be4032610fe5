"""What a redacted TaskArrived keeps, whatever its sender put in it."""

from __future__ import annotations

import hashlib
import json

from routewise.contracts.subjects import Subjects
from routewise.runtime.redaction import redact_error, redact_task

SECRET = "the launch date of Project Nightingale is the 14th"


def digest(text: str) -> dict[str, object]:
    return {"redacted": {"sha256": hashlib.sha256(text.encode()).hexdigest(), "chars": len(text)}}


def test_the_prompt_and_every_message_text_are_replaced_by_their_hash_and_length() -> None:
    task = {
        "task_id": "8d7f0a52-3f0e-4f55-9c55-1f3e0d1f6a11",
        "scope": {"org_id": "acme", "team_id": "core"},
        "task_type": "code",
        "prompt": SECRET,
        "messages": [{"role": "user", "content": SECRET}, "loose text " + SECRET],
        "constraints": {"max_cost_usd": "0.1"},
    }
    kept = json.loads(redact_task(json.dumps(task).encode()))
    assert SECRET[:10] not in json.dumps(kept)
    assert kept["prompt"] == digest(SECRET)
    assert kept["messages"][0] == {"role": "user", "content": digest(SECRET)}
    assert kept["messages"][1] == digest("loose text " + SECRET)
    assert {k: kept[k] for k in ("task_id", "scope", "task_type", "constraints")} == {
        k: task[k] for k in ("task_id", "scope", "task_type", "constraints")
    }


def test_text_outside_the_contract_is_redacted_too() -> None:
    kept = json.loads(redact_task(json.dumps({"promt": SECRET, "prompt": [SECRET], "extra": {"a": SECRET}}).encode()))
    assert SECRET[:10] not in json.dumps(kept)
    assert kept["promt"] == digest(SECRET)
    assert set(kept["prompt"]["redacted"]) == {"sha256", "bytes"}


def test_a_payload_that_is_not_a_json_object_is_redacted_whole() -> None:
    for payload in (
        SECRET.encode(),
        json.dumps([SECRET]).encode(),
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff" + SECRET.encode(),
    ):
        kept = json.loads(redact_task(payload))
        assert kept == {"redacted": {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}}


def test_the_error_loses_the_input_pydantic_quotes() -> None:
    error = (
        "InvalidMessage: not a valid TaskArrived: 1 validation error for TaskArrived\n"
        "  Value error, give exactly one of prompt or messages [type=value_error,"
        f" input_value={{'prompt': '{SECRET[:30]}...', 'messages': []}}, input_type=dict]"
    )
    redacted = redact_error(error)
    assert SECRET[:20] not in redacted
    assert "give exactly one of prompt or messages" in redacted and "input_type=dict" in redacted


def test_tasks_have_their_own_stream_and_rejections_stay_with_the_decisions() -> None:
    s = Subjects()
    assert s.stream_for(s.for_org("task_arrived", "acme")).name == "ROUTEWISE_TASKS"
    assert s.stream_for(s.for_org("task_rejected", "acme")).name == "ROUTEWISE_EVENTS"
    assert s.stream_for(s.for_org("model_selected", "acme")).name == "ROUTEWISE_EVENTS"
    assert [stream.name for stream in s.streams][:2] == ["ROUTEWISE_EVENTS", "ROUTEWISE_TASKS"]  # order of set-up
