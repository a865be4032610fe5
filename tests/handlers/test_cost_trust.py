"""The handlers of cost trust called directly (real Postgres, no bus): cost-predictor's check of a
reported cost and its adjustments, and how budget-enforcer and metrics apply an adjustment."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from routewise.contracts.budget import CreateBudget, GetBudgetStatus
from routewise.contracts.catalog import default_catalog
from routewise.contracts.cost import AdjustCost
from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import CostAdjusted, CostRecorded, CostReported, ModelSelected, Scope, Tier
from routewise.runtime.service import apply_once
from routewise.runtime.settings import Settings
from routewise.services.budget_enforcer import handlers as budgets
from routewise.services.budget_enforcer.handlers import BudgetDeps
from routewise.services.cost_predictor import handlers as costs
from routewise.services.cost_predictor import trust
from routewise.services.cost_predictor.handlers import CostDeps
from routewise.services.cost_predictor.pricing import PriceBook
from routewise.services.metrics import repository as metrics_repo
from routewise.services.performance_tracker import repository as perf_repo
from tests.handlers.cost_metrics_twins import CostBusTwin
from tests.helpers import Clock, a_cost

D = Decimal
NOW = datetime.now(UTC).replace(microsecond=0)


def an_org() -> Scope:
    return Scope(org_id=f"org-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def cost_deps(service_pool: Callable[[str], Awaitable[asyncpg.Pool]], settings: Settings) -> CostDeps:
    catalog = default_catalog()
    pool = await service_pool("cost_predictor")
    return CostDeps(pool=pool, settings=settings, catalog=catalog, book=PriceBook(catalog), bus=CostBusTwin())


@pytest.fixture
async def budget_deps(service_pool: Callable[[str], Awaitable[asyncpg.Pool]], settings: Settings) -> BudgetDeps:
    return BudgetDeps(pool=await service_pool("budget_enforcer"), settings=settings, clock=Clock(NOW))


def a_report(scope: Scope, cost: str, **fields: object) -> CostReported:
    return CostReported.model_validate(
        {
            "task_id": uuid.uuid4(),
            "scope": scope,
            "model": "gpt-4o-mini",
            "provider": "openai",
            "input_tokens": 10,
            "output_tokens": 5,
            "cost_usd": D(cost),
            **fields,
        }
    )


async def published(admin: asyncpg.Connection, subject: str) -> list[dict]:  # type: ignore[type-arg]
    rows = await admin.fetch("SELECT payload FROM cost_predictor.outbox WHERE subject = $1 ORDER BY id", subject)
    return [json.loads(bytes(r["payload"])) for r in rows]


# --- cost-predictor: the check ----------------------------------------------------------------


def a_decision(report: CostReported, *, org: str | None = None, fallbacks: tuple[str, ...] = ()) -> ModelSelected:
    """The selector's decision of the report's task (its model chosen; in ``org`` when given)."""
    return ModelSelected(
        task_id=report.task_id,
        scope=Scope(org_id=org or report.scope.org_id),
        task_type=report.task_type,
        model=report.model,
        provider=report.provider,
        tier=Tier.micro,
        fallback_chain=list(fallbacks),
        estimated_input_tokens=report.input_tokens,
        estimated_output_tokens=report.output_tokens,
        estimated_cost_usd=D("0.00001"),
        baseline_model=report.model,
        baseline_cost_usd=D("0.00001"),
        strategy="complexity",
        confidence=0.5,
        complexity=0.1,
        pattern="factual",
        reasoning="cheap",
        decision_latency_ms=1,
    )


async def decided(report: CostReported, deps: CostDeps) -> CostReported:
    """The report, once cost-predictor has learnt its task's decision."""
    await apply_once(costs.learn_decision, a_decision(report), deps)
    return report


async def test_a_plausible_report_is_recorded_once_under_its_verdict_id(
    cost_deps: CostDeps, admin: asyncpg.Connection
) -> None:
    scope = an_org()
    report = await decided(a_report(scope, "0.000005"), cost_deps)
    await costs.check_reported_cost(report, cost_deps)
    await costs.check_reported_cost(report, cost_deps)  # redelivered: applied once
    recorded = await published(admin, cost_deps.subjects.for_org("cost_recorded", scope.org_id))
    assert [(r["event_id"], r["reported_event_id"], r["self_priced"]) for r in recorded] == [
        (str(trust.recorded_id(report.event_id)), str(report.event_id), False)
    ]
    assert await published(admin, cost_deps.subjects.for_org("cost_refused", scope.org_id)) == []


async def test_a_refusal_is_published_counted_and_charges_nothing(
    cost_deps: CostDeps, admin: asyncpg.Connection
) -> None:
    scope = an_org()
    counted: list[str] = []
    cost_deps.count_refusal = counted.append
    for report in (a_report(scope, "10000000"), a_report(scope, "0.01", model="llama-private-7")):
        await costs.check_reported_cost(await decided(report, cost_deps), cost_deps)
    refused = await published(admin, cost_deps.subjects.for_org("cost_refused", scope.org_id))
    assert [(r["reason"], r["expected_cost_usd"]) for r in refused] == [
        ("implausible_cost", "0.0000045"),
        ("unknown_model", None),
    ]
    assert counted == ["implausible_cost", "unknown_model"]
    assert await published(admin, cost_deps.subjects.for_org("cost_recorded", scope.org_id)) == []


async def test_a_deployment_that_allows_self_priced_costs_records_them_flagged(
    cost_deps: CostDeps, admin: asyncpg.Connection
) -> None:
    cost_deps.settings = cost_deps.settings.model_copy(update={"allow_self_priced": True, "cost_report_wait": 0.2})
    scope = an_org()
    for report in (a_report(scope, "0.5"), a_report(scope, "0.01", model="llama-private-7", provider="acme-gpu")):
        await costs.check_reported_cost(await decided(report, cost_deps), cost_deps)
    recorded = await published(admin, cost_deps.subjects.for_org("cost_recorded", scope.org_id))
    assert [(r["model"], r["cost_usd"], r["self_priced"]) for r in recorded] == [
        ("gpt-4o-mini", "0.5", True),
        ("llama-private-7", "0.01", True),
    ]
    # more than a call may cost is refused all the same, and so is a call of no task Routewise routed
    await costs.check_reported_cost(a_report(scope, "10000000"), cost_deps)
    await costs.check_reported_cost(a_report(scope, "0.5"), cost_deps)
    refused = await published(admin, cost_deps.subjects.for_org("cost_refused", scope.org_id))
    assert [r["reason"] for r in refused] == ["implausible_cost", "unknown_task"]


async def test_a_failed_call_is_counted_only_for_a_task_routed_in_its_org_to_that_model(
    cost_deps: CostDeps, admin: asyncpg.Connection
) -> None:
    """A failed call costs nothing, and counts toward its model's health for every org: only a call
    of a decision of the reporting org, with a model of that decision, is recorded."""
    cost_deps.settings = cost_deps.settings.model_copy(update={"cost_report_wait": 0.3})
    scope, elsewhere = an_org(), an_org()
    failed = {"success": False, "error_type": "rate_limited", "cost_usd": D(0)}
    never_routed = a_report(scope, "0", **failed)
    theirs = a_report(scope, "0", **failed)
    await apply_once(costs.learn_decision, a_decision(theirs, org=elsewhere.org_id), cost_deps)  # another org's
    other_model = a_report(scope, "0", **failed)
    await apply_once(costs.learn_decision, a_decision(other_model).model_copy(update={"model": "gpt-4o"}), cost_deps)
    fallback = a_report(scope, "0", model="openai/gpt-4o", **failed)  # by another name of a fallback
    await apply_once(
        costs.learn_decision, a_decision(fallback, fallbacks=("gpt-4o",)).model_copy(update={"model": "o3"}), cost_deps
    )

    loop = asyncio.get_running_loop()
    started = loop.time()
    await costs.check_reported_cost(never_routed, cost_deps)
    waited = loop.time() - started
    started = loop.time()
    for report in (theirs, other_model, fallback):
        await costs.check_reported_cost(report, cost_deps)
    known = loop.time() - started

    refused = await published(admin, cost_deps.subjects.for_org("cost_refused", scope.org_id))
    assert [(r["task_id"], r["reason"]) for r in refused] == [
        (str(never_routed.task_id), "unknown_task"),
        (str(theirs.task_id), "unknown_task"),
        (str(other_model.task_id), "model_not_in_decision"),
    ]
    assert f"no decision of task {never_routed.task_id} is known in org {scope.org_id}" in refused[0]["detail"]
    assert refused[2]["detail"] == f"task {other_model.task_id} was routed to gpt-4o (no fallbacks), not to gpt-4o-mini"
    recorded = await published(admin, cost_deps.subjects.for_org("cost_recorded", scope.org_id))
    assert [r["task_id"] for r in recorded] == [str(fallback.task_id)]
    assert 0.3 <= waited < 2  # it waited for a decision that might have been on its way, then gave up
    assert known < 0.3  # a decision known (of another org, or another model) is not waited for


async def test_a_report_that_overtook_its_decision_waits_for_it(cost_deps: CostDeps, admin: asyncpg.Connection) -> None:
    cost_deps.settings = cost_deps.settings.model_copy(update={"cost_report_wait": 10})
    scope = an_org()
    report = a_report(scope, "0.000005")
    checking = asyncio.create_task(costs.check_reported_cost(report, cost_deps))
    await asyncio.sleep(0.3)
    assert not checking.done()  # waiting, without a verdict
    await apply_once(costs.learn_decision, a_decision(report), cost_deps)
    await asyncio.wait_for(checking, 5)
    recorded = await published(admin, cost_deps.subjects.for_org("cost_recorded", scope.org_id))
    assert [r["reported_event_id"] for r in recorded] == [str(report.event_id)]


# --- cost-predictor: adjustments ----------------------------------------------------------------


def a_recorded(scope: Scope, cost: str, task_id: uuid.UUID, **fields: object) -> CostRecorded:
    return CostRecorded.model_validate(
        {
            "task_id": task_id,
            "scope": scope,
            "model": "gpt-4o",
            "provider": "openai",
            "input_tokens": 10,
            "output_tokens": 5,
            "cost_usd": D(cost),
            **fields,
        }
    )


def adjust(task_id: uuid.UUID, **fields: object) -> AdjustCost:
    return AdjustCost.model_validate({"task_id": task_id, "reason": "invoice", "actor": "ana", **fields})


async def test_a_call_recorded_twice_is_adjusted_by_naming_which_cost(
    cost_deps: CostDeps, admin: asyncpg.Connection
) -> None:
    scope, task = an_org(), uuid.uuid4()
    first, second = a_recorded(scope, "0.1", task), a_recorded(scope, "0.2", task)
    for event in (first, second, a_recorded(scope, "0", task, cached=True, input_tokens=0, output_tokens=0)):
        await apply_once(costs.learn_cost, event, cost_deps)

    with pytest.raises(RoutewiseError, match="has 2 recorded costs; say which") as ambiguous:
        await costs.adjust_cost(adjust(task, cost_usd="0.05"), cost_deps)
    assert ambiguous.value.code == "invalid_request"
    assert set(ambiguous.value.details["cost_event_ids"]) == {str(first.event_id), str(second.event_id)}

    done = await costs.adjust_cost(adjust(task, cost_usd="0.05", cost_event_id=second.event_id), cost_deps)
    again = await costs.adjust_cost(adjust(task, void=True, cost_event_id=second.event_id), cost_deps)
    assert (done.sequence, done.previous_cost_usd, done.delta_usd) == (1, D("0.2"), D("-0.15"))
    assert (again.sequence, again.previous_cost_usd, again.delta_usd, again.void) == (2, D("0.05"), D("-0.05"), True)
    events = await published(admin, cost_deps.subjects.for_org("cost_adjusted", scope.org_id))
    assert [(e["event_id"], e["sequence"], e["cost_event_id"]) for e in events] == [
        (str(done.adjustment_id), 1, str(second.event_id)),
        (str(again.adjustment_id), 2, str(second.event_id)),
    ]
    with pytest.raises(RoutewiseError, match="no cost is recorded for task") as other_attempt:
        await costs.adjust_cost(adjust(task, attempt=2, cost_usd="1"), cost_deps)
    assert other_attempt.value.code == "not_found"


# --- budget-enforcer ------------------------------------------------------------------------


def an_adjustment(cost: CostRecorded, sequence: int, previous: str, new: str) -> CostAdjusted:
    return CostAdjusted(
        task_id=cost.task_id,
        attempt=cost.attempt,
        scope=cost.scope,
        model=cost.model,
        provider=cost.provider,
        cost_event_id=cost.event_id,
        recorded_at=cost.occurred_at,
        sequence=sequence,
        previous_cost_usd=D(previous),
        cost_usd=D(new),
        delta_usd=D(new) - D(previous),
        void=D(new) == 0,
        reason="invoice",
        actor="ana",
    )


async def a_daily_budget(deps: BudgetDeps, scope: Scope, limit: str) -> None:
    request = CreateBudget(
        name="daily",
        scope_type="org",
        scope_id=scope.org_id,
        period="daily",
        limit_usd=D(limit),
        starts_at=NOW - timedelta(days=3),
        actor="test",
    )
    await budgets.create(request, deps)


async def spend_on(deps: BudgetDeps, scope: Scope, day: datetime) -> Decimal:
    deps.clock = Clock(day)  # type: ignore[assignment]
    try:
        return (await budgets.status(GetBudgetStatus(scope=scope), deps)).budgets[0].current_spend_usd
    finally:
        deps.clock = Clock(NOW)  # type: ignore[assignment]


async def alerts_of(admin: asyncpg.Connection, deps: BudgetDeps, scope: Scope) -> list[int]:
    rows = await admin.fetch(
        "SELECT payload FROM budget_enforcer.outbox WHERE subject = $1 ORDER BY id",
        deps.subjects.budget_alert("org", scope.org_id),
    )
    return [json.loads(bytes(r["payload"]))["threshold_percent"] for r in rows]


async def test_an_adjustment_moves_the_spend_of_the_period_the_cost_was_charged_to(
    budget_deps: BudgetDeps, admin: asyncpg.Connection
) -> None:
    scope = an_org()
    await a_daily_budget(budget_deps, scope, limit="10")
    yesterday = NOW - timedelta(days=1)
    late = a_cost(scope, "4", at=yesterday)  # yesterday's call, recorded today
    today = a_cost(scope, "1", at=NOW)
    for cost in (late, today):
        await apply_once(budgets.settle_cost, cost, budget_deps)

    up = an_adjustment(late, 1, "4", "9")  # 90 % of yesterday's budget: 50 and 80 % alert, for yesterday
    await apply_once(budgets.adjust_cost, up, budget_deps)
    assert (await spend_on(budget_deps, scope, yesterday), await spend_on(budget_deps, scope, NOW)) == (D(9), D(1))
    assert await alerts_of(admin, budget_deps, scope) == [50, 80]
    status = await budgets.status(GetBudgetStatus(scope=scope), budget_deps)
    assert (status.spent_usd, status.costs_recorded) == (D(10), 2)

    down = an_adjustment(late, 2, "9", "0")  # voided: no alert taken back, none raised
    await apply_once(budgets.adjust_cost, down, budget_deps)
    assert await spend_on(budget_deps, scope, yesterday) == 0
    assert await alerts_of(admin, budget_deps, scope) == [50, 80]
    again = an_adjustment(late, 3, "0", "8.5")  # back over 80 %: raised once per period, already raised
    await apply_once(budgets.adjust_cost, again, budget_deps)
    assert await alerts_of(admin, budget_deps, scope) == [50, 80]
    audit = await admin.fetch(
        "SELECT actor, after ->> 'cost_usd' AS cost FROM budget_enforcer.budget_audit"
        " WHERE action = 'adjust_cost' AND task_id = $1 ORDER BY id",
        late.task_id,
    )
    assert [(a["actor"], a["cost"]) for a in audit] == [("ana", "9"), ("ana", "0"), ("ana", "8.5")]


async def test_an_adjustment_moves_the_period_charged_even_when_that_period_would_be_computed_otherwise_now(
    budget_deps: BudgetDeps, admin: asyncpg.Connection
) -> None:
    scope = an_org()
    await a_daily_budget(budget_deps, scope, limit="10")
    cost = a_cost(scope, "2", at=NOW)
    await apply_once(budgets.settle_cost, cost, budget_deps)
    [charged] = await admin.fetch(
        "SELECT budget_id, period_start FROM budget_enforcer.budget_charges WHERE event_id = $1", cost.event_id
    )
    # the budget's day now starts elsewhere than when the cost was charged (its time zone's rules
    # changed in an update of the time zone database, say): midnight in Kiritimati, UTC+14
    await admin.execute(
        "UPDATE budget_enforcer.budgets SET timezone = 'Pacific/Kiritimati' WHERE id = $1", charged["budget_id"]
    )

    await apply_once(budgets.adjust_cost, an_adjustment(cost, 1, "2", "9"), budget_deps)

    periods = await admin.fetch(
        "SELECT period_start, spent_usd FROM budget_enforcer.budget_periods WHERE budget_id = $1",
        charged["budget_id"],
    )
    assert [(p["period_start"], p["spent_usd"]) for p in periods] == [(charged["period_start"], D(9))]
    assert await alerts_of(admin, budget_deps, scope) == [50, 80]  # in the period charged


async def test_adjustments_that_come_before_their_cost_apply_after_it_in_order(
    budget_deps: BudgetDeps, admin: asyncpg.Connection
) -> None:
    scope = an_org()
    await a_daily_budget(budget_deps, scope, limit="10")
    cost = a_cost(scope, "2", at=NOW)
    first, second = an_adjustment(cost, 1, "2", "5"), an_adjustment(cost, 2, "5", "9")

    # redeliveries overtook them: the second, then the first, then the cost
    for early in (second, first):
        assert await apply_once(budgets.adjust_cost, early, budget_deps)  # applied: parked, not retried
    assert await spend_on(budget_deps, scope, NOW) == 0
    await apply_once(budgets.settle_cost, cost, budget_deps)
    assert await spend_on(budget_deps, scope, NOW) == D(9)
    assert await alerts_of(admin, budget_deps, scope) == [50, 80]  # raised by the adjustments, once
    parked = await admin.fetchval(
        "SELECT count(*) FROM budget_enforcer.parked_adjustments WHERE cost_event_id = $1", cost.event_id
    )
    assert parked == 0
    assert not await apply_once(budgets.adjust_cost, first, budget_deps)  # a redelivery: applied once


# --- metrics --------------------------------------------------------------------------------


async def test_metrics_moves_a_cost_only_once_it_has_it(
    service_pool: Callable[[str], Awaitable[asyncpg.Pool]],
) -> None:
    pool = await service_pool("metrics")
    scope = an_org()
    cost = a_cost(scope, "2", at=NOW)
    down, up = an_adjustment(cost, 1, "2", "0.5"), an_adjustment(cost, 2, "0.5", "0.75")
    forged = an_adjustment(a_cost(scope, "1", at=NOW), 1, "1", "7")  # of a cost metrics never had

    async def actual(task_id: uuid.UUID) -> asyncpg.Record | None:
        return await pool.fetchrow(
            "SELECT actual_cost_usd, cost_adjustments FROM task_ledger WHERE task_id = $1", task_id
        )

    async with pool.acquire() as conn, conn.transaction():
        await metrics_repo.adjust_cost(conn, up)  # early: parked
        await metrics_repo.adjust_cost(conn, forged)
    assert await actual(cost.task_id) is None and await actual(forged.task_id) is None  # nothing made up
    async with pool.acquire() as conn, conn.transaction():
        await metrics_repo.record_cost(conn, cost)  # the cost, then what was waiting for it
    assert tuple(await actual(cost.task_id) or ()) == (D(2), 0)
    async with pool.acquire() as conn, conn.transaction():
        await metrics_repo.adjust_cost(conn, down)  # the first: it and the parked second apply
    assert tuple(await actual(cost.task_id) or ()) == (D("0.75"), 2)


async def test_performance_statistics_move_in_the_buckets_the_call_counted_in(
    service_pool: Callable[[str], Awaitable[asyncpg.Pool]],
) -> None:
    pool = await service_pool("performance_tracker")
    model, task_type = f"m-{uuid.uuid4().hex[:8]}", f"t_{uuid.uuid4().hex[:8]}"
    cost = a_cost(an_org(), "0.3", at=NOW, model=model).model_copy(update={"task_type": task_type})
    first = an_adjustment(cost, 1, "0.3", "0.1").model_copy(update={"task_type": task_type})
    second = an_adjustment(cost, 2, "0.1", "0.25").model_copy(update={"task_type": task_type})

    async def costs() -> set[Decimal]:
        rows = await pool.fetch("SELECT cost_usd FROM stat_buckets WHERE model = $1", model)
        assert len(rows) == 9  # model, task type and pattern, each by minute, hour and all time
        return {r["cost_usd"] for r in rows}

    async with pool.acquire() as conn, conn.transaction():
        await perf_repo.adjust_cost(conn, first)  # before the call is counted: parked
        await perf_repo.record_outcome(conn, cost)  # counted, and the parked adjustment applied
    assert await costs() == {D("0.1")}
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM stat_buckets WHERE model = $1 AND granularity = 'minute'", model)  # pruned
        await perf_repo.adjust_cost(conn, second)
    rows = await pool.fetch("SELECT granularity, cost_usd FROM stat_buckets WHERE model = $1", model)
    assert {(r["granularity"], r["cost_usd"]) for r in rows} == {("hour", D("0.25")), ("all", D("0.25"))}
