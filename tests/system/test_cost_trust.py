"""Cost data finance can trust, end to end (every service in the test process, real NATS and
Postgres): an application's cost is checked by cost-predictor before anything applies it, and a
recorded cost is corrected or voided once everywhere, however often its adjustment is delivered."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest

from routewise.client import RemoteError, RoutewiseClient
from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
from routewise.contracts.cost import AdjustCost, CostAdjustment
from routewise.contracts.events import (
    BudgetAlert,
    Constraints,
    CostAdjusted,
    CostRecorded,
    CostRefusal,
    CostRefused,
    CostReported,
    ModelSelected,
    Scope,
    TaskArrived,
)
from routewise.contracts.metrics import GetMetricsReport, MetricsReport
from routewise.contracts.performance import Performance, QueryPerformance
from tests.conftest import Database, RunningStack, in_process_stack
from tests.helpers import eventually

D = Decimal
WAIT_S = 5
"""How long a report waits here for its task's decision (ROUTEWISE_COST_REPORT_WAIT; 30 s by default)."""


@pytest.fixture(scope="module")
def running_stack(nats_url: str, database: Database) -> Iterator[RunningStack]:
    """The five services inside the test process, reports waiting ``WAIT_S`` for their decision."""
    with in_process_stack(nats_url, database, extra_env={"ROUTEWISE_COST_REPORT_WAIT": str(WAIT_S)}) as stack:
        yield stack


def new_org() -> str:
    return f"trust-{uuid.uuid4().hex[:8]}"


def a_report(org: str, cost: str, *, input_tokens: int = 10, output_tokens: int = 5, **fields: object) -> CostReported:
    return CostReported.model_validate(
        {
            "task_id": uuid.uuid4(),
            "scope": Scope(org_id=org),
            "model": "gpt-4o-mini",
            "provider": "openai",
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": D(cost),
            **fields,
        }
    )


async def decided(rw: RoutewiseClient, scope: Scope, model: str = "gpt-4o-mini") -> ModelSelected:
    """A task of ``scope`` routed to ``model`` (forced: the only candidate): what a report is for."""
    task = TaskArrived(scope=scope, prompt="Say hello.", constraints=Constraints(allowed_models=[model]))
    decision = await rw.submit_task(task, wait=20)
    assert isinstance(decision, ModelSelected) and decision.model == model, decision
    return decision


def budget(stack: RunningStack, org: str, limit: str) -> None:
    result = stack.cli("budgets", "create", "--scope", f"org:{org}", "--limit", limit, "--by", "ops@acme", "--json")
    assert result.returncode == 0, result.stdout + result.stderr


async def status(rw: RoutewiseClient, org: str) -> BudgetStatus:
    return await rw.request(rw.subjects.budget_status, GetBudgetStatus(scope_type="org", scope_id=org), BudgetStatus)


async def report(rw: RoutewiseClient, org: str) -> MetricsReport:
    ask = GetMetricsReport(days=1, scope_type="org", scope_id=org)
    return await rw.request(rw.subjects.metrics_report, ask, MetricsReport)


def actual(r: MetricsReport) -> Decimal:
    return sum((p.cost for p in r.cost_per_day), D(0))


async def test_a_ten_million_dollar_cost_for_fifteen_tokens_is_refused(running_stack: RunningStack) -> None:
    org = new_org()
    budget(running_stack, org, "100")
    async with RoutewiseClient(running_stack.settings) as rw:
        forged = a_report(org, "10000000")  # 10 tokens in and 5 out of gpt-4o-mini: $0.0000045
        verdict = await rw.record_cost(forged, trace_context={}, wait=20)
        assert isinstance(verdict, CostRefused), verdict
        assert verdict.reason is CostRefusal.implausible_cost
        assert verdict.reported_event_id == forged.event_id and verdict.task_id == forged.task_id
        assert verdict.reported_cost_usd == D(10_000_000)
        assert verdict.expected_cost_usd == D("0.0000045")
        assert "more than one call may cost" in verdict.detail

        # an amount a call may cost, still a million times what the tokens cost: refused too
        inflated = await rw.record_cost(a_report(org, "4.5"), trace_context={}, wait=20)
        assert isinstance(inflated, CostRefused) and inflated.reason is CostRefusal.implausible_cost
        assert inflated.detail == "$4.5 is more than 10 times what its tokens cost ($0.0000045)"
        unknown = await rw.record_cost(a_report(org, "0.001", model="acme-secret-9"), trace_context={}, wait=20)
        assert isinstance(unknown, CostRefused) and unknown.reason is CostRefusal.unknown_model
        assert unknown.expected_cost_usd is None and "acme-secret-9" in unknown.detail

        # a plausible cost after them is charged, and is all that was: nothing of the refused ones
        # reached budget-enforcer or metrics (they were never recorded: nothing would come later)
        task = await decided(rw, Scope(org_id=org))
        fair = await rw.record_cost(a_report(org, "0.0000045", task_id=task.task_id), trace_context={}, wait=20)
        assert isinstance(fair, CostRecorded) and not fair.self_priced

        async def charged() -> BudgetStatus | None:
            s = await status(rw, org)
            return s if s.costs_recorded else None

        after = await eventually(charged, timeout=20)
        assert (after.costs_recorded, after.spent_usd) == (1, D("0.0000045"))
        assert after.budgets[0].current_spend_usd == D("0.0000045")

        async def counted() -> MetricsReport | None:
            r = await report(rw, org)
            return r if r.cost_per_day else None

        metrics = await eventually(counted, timeout=20, interval=0.3)
        assert actual(metrics) == D("0.0000045")
        assert [p.tasks for p in metrics.cost_per_day] == [1]


async def test_a_plausible_cost_is_recorded_once_however_often_it_is_reported(running_stack: RunningStack) -> None:
    org = new_org()
    async with RoutewiseClient(running_stack.settings) as rw:
        decision = await rw.submit_task(TaskArrived(scope=Scope(org_id=org), prompt="What is 2 + 2?"), wait=20)
        assert isinstance(decision, ModelSelected)
        # rounded up to the cent: 20 times what the tokens cost, within the one-cent floor
        report_ = a_report(org, "0.01", task_id=decision.task_id, input_tokens=1000, output_tokens=500)
        report_ = report_.model_copy(update={"model": decision.model, "provider": decision.provider})
        verdict = await rw.record_cost(report_, wait=20)
        assert isinstance(verdict, CostRecorded), verdict
        assert verdict.reported_event_id == report_.event_id and verdict.event_id != report_.event_id
        assert (verdict.cost_usd, verdict.occurred_at) == (D("0.01"), report_.occurred_at)

        # the same report again, past JetStream's duplicate window (a new Nats-Msg-Id): applied once
        await rw.nc.jetstream().publish(
            rw.subjects.event(report_),
            report_.model_dump_json().encode(),
            headers={"Nats-Msg-Id": f"again-{report_.event_id}"},
        )
        other = await decided(rw, Scope(org_id=org))
        marker = await rw.record_cost(a_report(org, "0.0000045", task_id=other.task_id), trace_context={}, wait=20)
        assert isinstance(marker, CostRecorded)

        async def both() -> BudgetStatus | None:
            s = await status(rw, org)
            return s if s.costs_recorded >= 2 else None

        assert (await eventually(both, timeout=20)).spent_usd == D("0.0100045")
        # and the task's hold was settled by the cost
        settled = await status(rw, org)
        assert settled.costs_recorded == 2


async def test_routewise_record_prints_the_refusal(running_stack: RunningStack) -> None:
    org = new_org()
    async with RoutewiseClient(running_stack.settings) as rw:
        decided = await rw.submit_task(TaskArrived(scope=Scope(org_id=org), prompt="Say hello."), wait=20)
    assert isinstance(decided, ModelSelected)
    args = ["record", str(decided.task_id), "--input-tokens", "10", "--output-tokens", "5"]
    refused = running_stack.cli(*args, "--cost", "10000000", "--json")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    shown = json.loads(refused.stdout)
    assert (shown["status"], shown["reason"]) == ("refused", "implausible_cost")
    assert shown["cost_usd"] == "10000000" and "more than one call may cost" in shown["detail"]
    priced = running_stack.cli(*args, "--json")  # priced by cost-predictor: always plausible
    assert priced.returncode == 0, priced.stdout + priced.stderr
    assert json.loads(priced.stdout)["status"] == "recorded"


async def adjust(rw: RoutewiseClient, task_id: uuid.UUID, **fields: object) -> CostAdjustment:
    request = AdjustCost.model_validate({"task_id": task_id, "reason": "invoice check", "actor": "ana@acme", **fields})
    return await rw.request(rw.subjects.cost_adjust, request, CostAdjustment)


async def adjust_once_known(rw: RoutewiseClient, task_id: uuid.UUID, **fields: object) -> CostAdjustment:
    """The first adjustment of a cost just recorded: cost-predictor learns it from the bus a moment
    after it published it."""

    async def attempt() -> CostAdjustment | None:
        try:
            return await adjust(rw, task_id, **fields)
        except RemoteError as exc:
            if exc.code != "not_found":
                raise
            return None

    return await eventually(attempt, timeout=20)


async def test_an_adjustment_fixes_spend_metrics_and_performance_once_even_replayed(
    running_stack: RunningStack,
) -> None:
    org = new_org()
    task_type = f"t_{uuid.uuid4().hex[:8]}"  # this test's own performance figures
    async with RoutewiseClient(running_stack.settings) as rw:
        task = await decided(rw, Scope(org_id=org), "gpt-4o")  # before the budget: nothing held on it
        budget(running_stack, org, "0.01")  # thresholds 50, 80, 95, 100 %
        alerts: list[BudgetAlert] = []

        async def on_alert(msg: object) -> None:
            alerts.append(BudgetAlert.model_validate_json(msg.data))  # type: ignore[attr-defined]

        await rw.nc.subscribe(rw.subjects.org_alerts(org), cb=on_alert)
        # 1000 tokens in and 200 out of gpt-4o: $0.0045, 45 % of the budget
        cost = a_report(
            org,
            "0.0045",
            input_tokens=1000,
            output_tokens=200,
            model="gpt-4o",
            task_type=task_type,
            task_id=task.task_id,
        )
        recorded = await rw.record_cost(cost, trace_context={}, wait=20)
        assert isinstance(recorded, CostRecorded)

        async def figures(spent: str, when: int = 1) -> tuple[BudgetStatus, MetricsReport, Performance]:
            """Budget status, metrics report and performance once all three show ``spent``."""

            async def seen() -> tuple[BudgetStatus, MetricsReport, Performance] | None:
                s, r = await status(rw, org), await report(rw, org)
                p = await rw.request(
                    rw.subjects.performance_query,
                    QueryPerformance(model="gpt-4o", task_type=task_type, window="all"),
                    Performance,
                )
                mean = p.stats[0].mean_cost_usd if p.stats else None
                shown = (s.spent_usd, actual(r), mean, r.adjusted_tasks)
                return (s, r, p) if shown == (D(spent), D(spent), D(spent), when) else None

            return await eventually(seen, timeout=20, interval=0.3)

        await figures("0.0045", when=0)
        assert alerts == []

        # corrected up to $0.009 (90 %): spend, metrics and statistics follow; 50 % and 80 % alert now
        up = await adjust_once_known(rw, cost.task_id, cost_usd="0.009")
        assert (up.previous_cost_usd, up.cost_usd, up.delta_usd, up.sequence) == (
            D("0.0045"),
            D("0.009"),
            D("0.0045"),
            1,
        )
        assert up.cost_event_id == recorded.event_id and up.actor == "ana@acme"
        state, metrics, _ = await figures("0.009")
        assert state.costs_recorded == 1  # a correction is not another call
        assert [p.tasks for p in metrics.cost_per_day] == [1]

        async def two_alerts() -> bool:
            return len(alerts) == 2

        await eventually(two_alerts, timeout=10)
        assert sorted(a.threshold_percent for a in alerts) == [50, 80]
        assert {a.cause_event_id for a in alerts} == {up.adjustment_id}

        # the same CostAdjusted again, past JetStream's duplicate window: every consumer's inbox knows it
        event = CostAdjusted.model_validate(
            {
                **up.model_dump(exclude={"adjustment_id", "at"}),
                "event_id": up.adjustment_id,
                "occurred_at": up.at,
                "task_type": task_type,
                "recorded_at": recorded.occurred_at,
            }
        )
        await rw.nc.jetstream().publish(
            rw.subjects.event(event),
            event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": f"replayed-{event.event_id}"},
        )
        # corrected down to $0.002: no alert is taken back or raised; the replay changed nothing
        down = await adjust(rw, cost.task_id, cost_usd="0.002")
        assert (down.delta_usd, down.sequence) == (D("-0.007"), 2)
        await figures("0.002")
        # voided: spend back to zero
        void = await adjust(rw, cost.task_id, void=True)
        assert (void.cost_usd, void.delta_usd, void.void) == (D(0), D("-0.002"), True)
        state, _, _ = await figures("0")
        assert state.budgets[0].current_spend_usd == 0 and state.costs_recorded == 1
        assert len(alerts) == 2

        # the audit: who changed what, from what to what, and why
        listed = running_stack.cli("costs", "adjustments", str(cost.task_id), "--json")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        audit = json.loads(listed.stdout)["adjustments"]
        assert [(a["sequence"], a["previous_cost_usd"], a["cost_usd"], a["void"]) for a in audit] == [
            (3, "0.002", "0", True),
            (2, "0.009", "0.002", False),
            (1, "0.0045", "0.009", False),
        ]
        assert {(a["actor"], a["reason"]) for a in audit} == {("ana@acme", "invoice check")}

        # nothing left to void
        with pytest.raises(RemoteError, match="already void"):
            await adjust(rw, cost.task_id, void=True)


async def test_an_adjustment_of_an_unknown_task_is_refused(running_stack: RunningStack) -> None:
    unknown = uuid.uuid4()
    async with RoutewiseClient(running_stack.settings) as rw:
        with pytest.raises(RemoteError) as caught:
            await adjust(rw, unknown, cost_usd="1")
    assert caught.value.code == "not_found"
    assert f"no cost is recorded for task {unknown}, attempt 1: nothing to adjust" in caught.value.message
    shown = running_stack.cli("costs", "adjust", str(unknown), "--void", "--reason", "typo", "--json")
    assert shown.returncode == 1
    error = json.loads(shown.stdout)["error"]
    assert error["code"] == "not_found" and f"task {unknown}" in error["message"]
    neither = running_stack.cli("costs", "adjust", str(unknown), "--reason", "typo", "--json")
    assert json.loads(neither.stdout)["error"]["message"] == "give either --cost USD or --void"


async def test_an_adjustment_stays_within_the_scope_it_is_asked_for(running_stack: RunningStack) -> None:
    org = new_org()
    async with RoutewiseClient(running_stack.settings) as rw:
        task = await decided(rw, Scope(org_id=org, team_id="data"))
        cost = a_report(org, "0.0000045", scope=Scope(org_id=org, team_id="data"), task_id=task.task_id)
        assert isinstance(await rw.record_cost(cost, trace_context={}, wait=20), CostRecorded)
        done = await adjust_once_known(rw, cost.task_id, cost_usd="0.00001", scope=Scope(org_id=org))
        assert done.cost_usd == D("0.00001") and done.scope.team_id == "data"
        # a sibling team's (or another org's) admin cannot see it: not found, as if it did not exist
        for other in (Scope(org_id=org, team_id="web"), Scope(org_id="elsewhere")):
            with pytest.raises(RemoteError, match="nothing to adjust"):
                await adjust(rw, cost.task_id, cost_usd="0.00002", scope=other)
        mine = await adjust(rw, cost.task_id, cost_usd="0.00002", scope=Scope(org_id=org, team_id="data"))
        assert (mine.sequence, mine.previous_cost_usd) == (2, D("0.00001"))


async def test_one_org_cannot_count_failed_calls_against_a_model_for_every_org(running_stack: RunningStack) -> None:
    """A failed call costs nothing and counts toward its model's health, which the selector uses for
    every org: a report of a task never routed, of another org's task, or of a model its task did
    not run is refused, so it never reaches the statistics."""
    org, victim = new_org(), new_org()
    task_type = f"t_{uuid.uuid4().hex[:8]}"  # this test's own performance figures
    failed = {"success": False, "error_type": "server_error", "latency_ms": 50.0, "task_type": task_type}
    async with RoutewiseClient(running_stack.settings) as rw:
        mine = await decided(rw, Scope(org_id=org))
        theirs = await decided(rw, Scope(org_id=victim))

        started = time.monotonic()
        never = await rw.record_cost(a_report(org, "0", **failed), trace_context={}, wait=20)
        waited = time.monotonic() - started
        assert isinstance(never, CostRefused) and never.reason is CostRefusal.unknown_task, never
        assert WAIT_S <= waited < WAIT_S + 10  # it waited for a decision that might have been on its way
        other_org = await rw.record_cost(
            a_report(org, "0", task_id=theirs.task_id, **failed), trace_context={}, wait=20
        )
        assert isinstance(other_org, CostRefused) and other_org.reason is CostRefusal.unknown_task, other_org
        wrong = await rw.record_cost(
            a_report(org, "0", task_id=mine.task_id, model="gpt-4o", **failed), trace_context={}, wait=20
        )
        assert isinstance(wrong, CostRefused) and wrong.reason is CostRefusal.model_not_in_decision, wrong
        assert wrong.detail == f"task {mine.task_id} was routed to gpt-4o-mini (no fallbacks), not to gpt-4o"

        # the org's own call of its own task counts; the refused ones never will
        ok = await rw.record_cost(a_report(org, "0", task_id=mine.task_id, **failed), trace_context={}, wait=20)
        assert isinstance(ok, CostRecorded), ok

        async def counted() -> Performance | None:
            ask = QueryPerformance(model="gpt-4o-mini", task_type=task_type, window="all")
            p = await rw.request(rw.subjects.performance_query, ask, Performance)
            return p if p.stats and p.stats[0].requests else None

        stats = (await eventually(counted, timeout=20)).stats[0]
        assert (stats.requests, stats.errors_by_type) == (1, {"server_error": 1})
        ask = QueryPerformance(model="gpt-4o", task_type=task_type, window="all")
        assert not any(s.requests for s in (await rw.request(rw.subjects.performance_query, ask, Performance)).stats)


async def test_a_report_that_overtakes_its_decision_is_recorded_once_the_decision_comes(
    running_stack: RunningStack,
) -> None:
    org = new_org()
    task = TaskArrived(
        scope=Scope(org_id=org), prompt="Say hello.", constraints=Constraints(allowed_models=["gpt-4o-mini"])
    )
    async with RoutewiseClient(running_stack.settings) as rw:
        report_ = a_report(org, "0.0000045", task_id=task.task_id)
        verdict = asyncio.create_task(rw.record_cost(report_, trace_context={}, wait=20))
        await asyncio.sleep(0.5)  # the report is on the bus, its task not even submitted yet
        decision = await rw.submit_task(task, wait=20)
        assert isinstance(decision, ModelSelected) and decision.model == "gpt-4o-mini"
        recorded = await verdict
    assert isinstance(recorded, CostRecorded) and recorded.reported_event_id == report_.event_id, recorded
