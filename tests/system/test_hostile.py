"""Hostile input the contracts now refuse at the door (issue 12): every string in an event is
bounded, so none can grow a subject or a KV key past what NATS carries."""

from __future__ import annotations

import json
import uuid

import nats
import pytest
from pydantic import ValidationError

from routewise.client import RoutewiseClient
from routewise.contracts.events import CostRecorded, Scope
from routewise.contracts.performance import Performance, QueryPerformance
from routewise.contracts.subjects import snapshot_key
from routewise.runtime.inprocess import System
from tests.helpers import a_cost, eventually


def test_a_model_name_longer_than_any_model_is_refused_by_the_contract() -> None:
    with pytest.raises(ValidationError, match="at most 200 characters"):
        a_cost(Scope(org_id="acme"), "0.01", model="m" * 5_000)
    assert len(snapshot_key("m" * 200).encode()) < 1_000  # the longest a contract allows: a short key


async def test_a_cost_with_a_huge_model_name_is_dead_lettered_and_performance_tracker_goes_on(system: System) -> None:
    subjects = system.settings.subjects
    hostile = json.loads(a_cost(Scope(org_id="acme"), "0.01").model_dump_json())
    hostile["model"] = "m" * 5_000
    nc = await nats.connect(system.settings.nats_url)
    try:
        await nc.jetstream().publish(
            subjects.cost_recorded, json.dumps(hostile).encode(), headers={"Nats-Msg-Id": str(uuid.uuid4())}
        )
        dead = await nc.jetstream().subscribe(
            subjects.dead_letter("performance_tracker"), stream=subjects.dead_letter_stream.name
        )
        letter = await dead.next_msg(timeout=10)
        assert letter.headers is not None and letter.headers["Routewise-DeadLetter-Reason"] == "invalid_message"
    finally:
        await nc.close()

    good = a_cost(Scope(org_id="acme"), "0.01", model="gpt-4o")
    async with RoutewiseClient(system.settings) as rw:
        await rw.record_cost(good, trace_context={})

        async def counted() -> Performance | None:
            found = await rw.request(subjects.performance_query, QueryPerformance(model="gpt-4o"), Performance)
            return found if any(s.requests >= 1 for s in found.stats) else None

        assert await eventually(counted)  # still consuming, still answering


def test_every_free_string_of_a_cost_is_bounded() -> None:
    properties = CostRecorded.model_json_schema()["properties"]
    for name in ("model", "provider", "error_type"):
        field = properties[name]
        bounds = [field.get("maxLength")] + [option.get("maxLength") for option in field.get("anyOf", [])]
        assert any(bounds), name
