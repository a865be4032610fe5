"""Hostile input the contracts now refuse at the door (issue 12): every string in an event is
bounded, so none can grow a subject or a KV key past what NATS carries; a call's cost is bounded
and every money column holds any sum of them."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg
from pydantic import ValidationError

from routewise.client import RoutewiseClient
from routewise.client.deadletters import HEADER_DELIVERIES, HEADER_REASON
from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
from routewise.contracts.events import MAX_CALL_COST_USD, CostRecorded, RejectionReason, Scope, TaskRejected
from routewise.contracts.metrics import GetMetricsSummary, MetricsSummary
from routewise.contracts.performance import Performance, QueryPerformance
from routewise.contracts.subjects import snapshot_key
from routewise.runtime.inprocess import System
from tests.helpers import a_cost, eventually, record_trusted


async def dead_lettered(system: System, cost: dict[str, Any], service: str) -> Msg:
    """Publish ``cost`` as it is (no SDK, no contract in the way); ``service``'s dead letter of it."""
    subjects = system.settings.subjects
    nc = await nats.connect(system.settings.nats_url)
    try:
        js = nc.jetstream()
        dead = await js.subscribe(subjects.dead_letter(service), stream=subjects.dead_letter_stream.name)
        subject = subjects.for_org("cost_recorded", cost["scope"]["org_id"])  # its own org's subject
        await js.publish(subject, json.dumps(cost).encode(), headers={"Nats-Msg-Id": str(uuid.uuid4())})
        return await dead.next_msg(timeout=10)
    finally:
        await nc.close()


def test_a_model_name_longer_than_any_model_is_refused_by_the_contract() -> None:
    with pytest.raises(ValidationError, match="at most 200 characters"):
        a_cost(Scope(org_id="acme"), "0.01", model="m" * 5_000)
    assert len(snapshot_key("m" * 200).encode()) < 1_000  # the longest a contract allows: a short key


async def test_a_cost_with_a_huge_model_name_is_dead_lettered_and_performance_tracker_goes_on(system: System) -> None:
    subjects = system.settings.subjects
    hostile = json.loads(a_cost(Scope(org_id="acme"), "0.01").model_dump_json())
    hostile["model"] = "m" * 5_000
    letter = await dead_lettered(system, hostile, "performance_tracker")
    assert letter.headers is not None and letter.headers["Routewise-DeadLetter-Reason"] == "invalid_message"

    good = a_cost(Scope(org_id="acme"), "0.01", model="gpt-4o")
    async with RoutewiseClient(system.settings) as rw:
        await record_trusted(rw, good)

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


async def test_a_cost_past_the_per_call_maximum_is_refused_and_maximal_costs_add_up_everywhere(system: System) -> None:
    """One 99,999,999.999999999999 cost used to break every org's report and poison its org's sums."""
    subjects = system.settings.subjects
    poison, org = Scope(org_id=f"poison-{uuid.uuid4().hex[:6]}"), Scope(org_id=f"big-{uuid.uuid4().hex[:6]}")
    hostile = json.loads(a_cost(poison, "0.01").model_dump_json())
    hostile["cost_usd"] = "99999999.999999999999"
    letter = await dead_lettered(system, hostile, "budget_enforcer")
    assert letter.headers is not None and letter.headers["Routewise-DeadLetter-Reason"] == "invalid_message"
    assert "less than or equal to 10000" in letter.headers["Routewise-DeadLetter-Error"]

    async with RoutewiseClient(system.settings) as rw:
        for _ in range(3):  # each the most a call may cost
            await record_trusted(rw, a_cost(org, str(MAX_CALL_COST_USD)))

        async def both_applied() -> tuple[BudgetStatus, MetricsSummary] | None:
            status = await rw.request(subjects.budget_status, GetBudgetStatus(scope=org), BudgetStatus)
            summary = await rw.request(subjects.metrics_summary, GetMetricsSummary(org_id=org.org_id), MetricsSummary)
            return (status, summary) if status.costs_recorded == 3 and summary.costs_recorded == 3 else None

        status, summary = await eventually(both_applied)
        everyone = await rw.request(subjects.metrics_summary, GetMetricsSummary(), MetricsSummary)  # all orgs
    assert status.spent_usd == summary.actual_cost_usd == 3 * MAX_CALL_COST_USD
    assert everyone.actual_cost_usd >= 3 * MAX_CALL_COST_USD


async def rejection_of(system: System, task: dict[str, Any]) -> TaskRejected:
    """Publish ``task`` as it is; the TaskRejected that answers it."""
    subjects = system.settings.subjects
    nc = await nats.connect(system.settings.nats_url)
    try:
        org = task["scope"]["org_id"]
        answers = await nc.subscribe(subjects.for_org("task_rejected", org))
        await nc.jetstream().publish(
            subjects.for_org("task_arrived", org), json.dumps(task).encode(), headers={"Nats-Msg-Id": str(uuid.uuid4())}
        )
        while True:
            rejected = TaskRejected.model_validate_json((await answers.next_msg(timeout=10)).data)
            if str(rejected.task_id) == task["task_id"]:
                return rejected
    finally:
        await nc.close()


async def answer_to(system: System, subject: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Send ``payload`` as it is; the reply."""
    nc = await nats.connect(system.settings.nats_url)
    try:
        reply = await nc.request(subject, json.dumps(payload).encode(), timeout=10)
    finally:
        await nc.close()
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


async def test_an_invalid_task_gets_a_rejection_with_why_not_silence(system: System) -> None:
    task = {"task_id": str(uuid.uuid4()), "scope": {"org_id": "acme"}, "prompt": "hi", "quality_bias": 7}
    rejected = await rejection_of(system, task)
    assert rejected.reason == RejectionReason.invalid_request
    assert "quality_bias" in rejected.detail and "less than or equal to 1" in rejected.detail


async def test_a_refusal_that_quotes_a_nul_is_still_answered(system: System) -> None:
    """The validation message quotes the input; with a NUL in it the error reply (and the
    TaskRejected) could not be built, so the sender got no answer at all (found by the fuzz)."""
    subjects = system.settings.subjects
    for subject, payload in (
        (subjects.budget_status, {"scope": {"org_id": "acme"}, "\x00": 1}),  # an extra field named NUL
        (subjects.routing_decision, {"task_id": "\x00"}),  # a value that quotes it
    ):
        answer = await answer_to(system, subject, payload)
        assert answer["error"]["code"] == "invalid_request", payload
        assert "\\u0000" in answer["error"]["message"]
    task = {"task_id": str(uuid.uuid4()), "scope": {"org_id": "acme"}, "prompt": "hi", "\x00": "extra"}
    rejected = await rejection_of(system, task)
    assert rejected.reason == RejectionReason.invalid_request and "\\u0000" in rejected.detail


OUT_OF_RANGE_IN_UTC = "0001-01-01T00:00:00+14:00"
"""A valid ISO 8601 instant that is before the first one Python's datetime holds, once in UTC."""


def test_a_timestamp_out_of_range_in_utc_is_refused_by_the_contract() -> None:
    cost = json.loads(a_cost(Scope(org_id="acme"), "0.01").model_dump_json()) | {"occurred_at": OUT_OF_RANGE_IN_UTC}
    with pytest.raises(ValidationError, match="out of range"):
        CostRecorded.model_validate_json(json.dumps(cost))


async def test_a_timestamp_out_of_range_is_dead_lettered_at_once_and_answered_invalid_request(system: System) -> None:
    """It used to raise OverflowError, which is not a validation error: the event was retried until
    max_deliver_exceeded and the request never answered (found by the fuzz)."""
    cost = json.loads(a_cost(Scope(org_id="acme"), "0.01").model_dump_json()) | {"occurred_at": OUT_OF_RANGE_IN_UTC}
    letter = await dead_lettered(system, cost, "metrics")
    assert letter.headers is not None
    assert letter.headers[HEADER_REASON] == "invalid_message" and letter.headers[HEADER_DELIVERIES] == "1"
    budget = {
        "name": "b",
        "scope_type": "org",
        "scope_id": "acme",
        "period": "monthly",
        "limit_usd": "10",
        "actor": "test",
        "starts_at": OUT_OF_RANGE_IN_UTC,
    }
    answer = await answer_to(system, system.settings.subjects.budget_create, budget)
    assert answer["error"]["code"] == "invalid_request" and "out of range" in answer["error"]["message"]


async def test_a_conflicting_duplicate_is_not_applied_and_is_counted(system: System) -> None:
    subjects = system.settings.subjects
    org = Scope(org_id=f"dup-{uuid.uuid4().hex[:6]}")
    first = a_cost(org, "0.01")
    conflicting = json.loads(first.model_dump_json())
    conflicting["cost_usd"] = "5"  # the same event id, another payload
    nc = await nats.connect(system.settings.nats_url)
    try:  # under another Nats-Msg-Id, so JetStream's duplicate window does not drop it first
        js = nc.jetstream()
        subject = subjects.event(first)
        await js.publish(subject, first.model_dump_json().encode(), headers={"Nats-Msg-Id": "a"})
        await js.publish(subject, json.dumps(conflicting).encode(), headers={"Nats-Msg-Id": "b"})
    finally:
        await nc.close()
    registry = system.runtimes["budget_enforcer"][0].registry

    def counted() -> float:
        return (
            registry.get_sample_value("routewise_conflicting_duplicates_total", {"subject": subjects.of(CostRecorded)})
            or 0
        )

    await eventually(lambda: asyncio.sleep(0, result=counted() == 1))
    async with RoutewiseClient(system.settings) as rw:
        status = await rw.request(subjects.budget_status, GetBudgetStatus(scope=org), BudgetStatus)
    assert status.spent_usd == Decimal("0.01") and status.costs_recorded == 1
