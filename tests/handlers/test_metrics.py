"""metrics' handlers called directly: real Postgres, cost-predictor's ``cost.price`` as an
in-memory twin, Prometheus meters on a registry of the test's own."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest
from genai_prices import Usage, calc_price
from prometheus_client import CollectorRegistry

from routewise.contracts.catalog import default_catalog
from routewise.contracts.errors import RemoteError
from routewise.contracts.events import (
    CostAdjusted,
    CostRecorded,
    FeedbackRecorded,
    ModelSelected,
    RejectionReason,
    Scope,
    TaskArrived,
    TaskRejected,
    Tier,
)
from routewise.contracts.metrics import GetMetricsReport, GetMetricsSummary, MetricsReport
from routewise.runtime.service import apply_once
from routewise.runtime.settings import Settings
from routewise.services.metrics import handlers
from routewise.services.metrics.handlers import MetricsDeps
from routewise.services.metrics.meters import Meters
from tests.handlers.cost_metrics_twins import PricerTwin
from tests.helpers import a_call

NOW = datetime.now(UTC)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def pricer() -> PricerTwin:
    return PricerTwin()


@pytest.fixture
async def deps(
    service_pool: Callable[[str], Awaitable[asyncpg.Pool]],
    settings: Settings,
    registry: CollectorRegistry,
    pricer: PricerTwin,
) -> MetricsDeps:
    pool = await service_pool("metrics")
    deps = MetricsDeps(pool=pool, settings=settings, meters=Meters(registry, default_catalog()), pricer=pricer)
    await handlers.price_baselines(deps)  # what earlier tests of the module left to price
    pricer.asked.clear()
    deps.to_price.clear()
    return deps


def an_org() -> Scope:
    return Scope(org_id=f"org-{uuid.uuid4().hex[:8]}", team_id="t1")


def a_decision(
    scope: Scope,
    *,
    estimated: str = "0.001",
    baseline: str = "0.004",
    baseline_model: str = "gpt-4.1",
    at: datetime = NOW,
    task_id: uuid.UUID | None = None,
) -> ModelSelected:
    return ModelSelected(
        task_id=task_id or uuid.uuid4(),
        scope=scope,
        task_type="normal",
        model="gpt-4o-mini",
        provider="openai",
        tier=Tier.standard,
        policy="normal",
        estimated_input_tokens=1000,
        estimated_output_tokens=200,
        estimated_cost_usd=Decimal(estimated),
        baseline_model=baseline_model,
        baseline_cost_usd=Decimal(baseline),
        strategy="complexity",
        confidence=0.8,
        complexity=0.3,
        pattern="factual",
        reasoning="simple enough",
        decision_latency_ms=20,
        occurred_at=at,
    )


def a_rejection(scope: Scope, task_id: uuid.UUID, at: datetime, reason: RejectionReason) -> TaskRejected:
    return TaskRejected(task_id=task_id, scope=scope, task_type="normal", reason=reason, detail="no", occurred_at=at)


async def report_of(scope: Scope, deps: MetricsDeps, by: str | None = None) -> MetricsReport:
    return await handlers.report(
        GetMetricsReport.model_validate({"days": 1, "scope_type": "org", "scope_id": scope.org_id, "by": by}), deps
    )


def baseline_at(input_tokens: int, output_tokens: int) -> Decimal:
    """What gpt-4.1 costs at these tokens, by genai-prices (to the ledger's 12 places)."""
    price = calc_price(
        Usage(input_tokens=input_tokens, output_tokens=output_tokens), model_ref="gpt-4.1", provider_id="openai"
    )
    return Decimal(str(price.total_price)).quantize(Decimal("1e-12"))


# --- the ledger -----------------------------------------------------------------------------


async def test_a_task_costs_the_sum_of_its_calls_and_the_summary_and_report_show_it(deps: MetricsDeps) -> None:
    scope = an_org()
    arrived = TaskArrived(scope=scope, prompt="What is the capital of France?", occurred_at=NOW)
    decision = a_decision(scope, task_id=arrived.task_id)
    calls = [a_call(decision, 800, 100, "0.0002"), a_call(decision, 800, 300, "0.0003")]  # a retry: two calls

    await apply_once(handlers.task_arrived, arrived, deps)
    await apply_once(handlers.model_selected, decision, deps)
    for call in calls:
        await apply_once(handlers.cost_recorded, call, deps)
    await apply_once(handlers.cost_recorded, calls[0], deps)  # a replay
    await apply_once(
        handlers.feedback_recorded,
        FeedbackRecorded(task_id=decision.task_id, scope=scope, model="x", quality=0.9),
        deps,
    )
    summary = await handlers.summary(GetMetricsSummary(org_id=scope.org_id), deps)
    report = await report_of(scope, deps, by="task_type")

    assert (summary.tasks, summary.selected, summary.rejected, summary.costs_recorded) == (1, 1, 0, 2)
    assert summary.actual_cost_usd == Decimal("0.0005")
    assert (summary.estimated_cost_usd, summary.baseline_cost_usd) == (Decimal("0.001"), Decimal("0.004"))
    assert report.cost_savings.tasks == 1 and report.cost_savings.total_saved == Decimal("0.003")
    assert report.fallback_rate == 1.0  # the task needed a second call
    assert sum(p.cost for p in report.cost_per_day) == Decimal("0.0005")
    assert [(s.strategy, s.count, s.rated, s.avg_quality) for s in report.by_strategy] == [("complexity", 1, 1, 0.9)]
    assert report.breakdown is not None and [(b.key, b.tasks) for b in report.breakdown] == [("normal", 1)]
    assert report.actual_unpriced_tasks == 1  # until the pricing job priced its baseline


async def test_the_later_decision_wins_and_the_report_remembers_the_rejection(deps: MetricsDeps) -> None:
    scope = an_org()
    decision = a_decision(scope)
    stale = a_rejection(scope, decision.task_id, NOW - timedelta(seconds=5), RejectionReason.approval_required)
    other = a_decision(scope)
    later = a_rejection(scope, other.task_id, NOW + timedelta(seconds=5), RejectionReason.budget_exhausted)

    await apply_once(handlers.model_selected, decision, deps)
    await apply_once(handlers.task_rejected, stale, deps)  # arrives late: the selection stands
    await apply_once(handlers.task_rejected, later, deps)  # arrives early: the later rejection stands
    await apply_once(handlers.model_selected, other, deps)
    summary = await handlers.summary(GetMetricsSummary(org_id=scope.org_id), deps)
    report = await report_of(scope, deps)

    assert (summary.tasks, summary.selected, summary.rejected) == (2, 1, 1)
    assert report.rejections == {"approval_required": 1, "budget_exhausted": 1}
    assert report.rejected_then_selected == 1
    assert report.cost_savings.tasks == 1


# --- baseline pricing -----------------------------------------------------------------------


async def test_the_pricing_job_prices_the_baseline_at_the_real_tokens(deps: MetricsDeps, pricer: PricerTwin) -> None:
    scope = an_org()
    decision = a_decision(scope)
    await apply_once(handlers.model_selected, decision, deps)
    await apply_once(handlers.cost_recorded, a_call(decision, 1000, 200, "0.0004"), deps)
    woken = deps.to_price.is_set()

    await handlers.price_baselines(deps)
    first = await report_of(scope, deps)
    await handlers.price_baselines(deps)  # nothing changed: nothing to ask
    asked_once = len(pricer.asked)
    await apply_once(handlers.cost_recorded, a_call(decision, 600, 200, "0.0002"), deps)
    await handlers.price_baselines(deps)  # the tokens changed: priced again
    second = await report_of(scope, deps)

    assert woken  # an applied cost wakes the job
    assert [(u.model, u.input_tokens, u.output_tokens) for u in pricer.asked] == [
        ("gpt-4.1", 1000, 200),
        ("gpt-4.1", 1600, 400),
    ]
    assert asked_once == 1
    assert first.actual_savings.baseline_cost == baseline_at(1000, 200)
    assert first.actual_savings.total_saved == baseline_at(1000, 200) - Decimal("0.0004")
    assert (first.actual_savings.tasks, first.actual_unpriced_tasks) == (1, 0)
    assert second.actual_savings.baseline_cost == baseline_at(1600, 400)
    assert second.actual_savings.intelligent_cost == Decimal("0.0006")


def voided(call: CostRecorded, sequence: int, *, cost: str | None = None) -> CostAdjusted:
    """The call's cost voided (or, with ``cost``, corrected to it), as cost-predictor publishes it."""
    previous, new = (Decimal(0), Decimal(cost)) if cost is not None else (call.cost_usd, Decimal(0))
    return CostAdjusted(
        task_id=call.task_id,
        attempt=call.attempt,
        scope=call.scope,
        model=call.model,
        provider=call.provider,
        cost_event_id=call.event_id,
        recorded_at=call.occurred_at,
        sequence=sequence,
        previous_cost_usd=previous,
        cost_usd=new,
        delta_usd=new - previous,
        void=cost is None,
        reason="recorded twice",
        actor="ana",
    )


async def test_a_voided_call_leaves_the_task_s_calls_tokens_and_savings(deps: MetricsDeps) -> None:
    scope = an_org()
    decision = a_decision(scope)
    first = a_call(decision, 1000, 200, "0.0004")
    retry = a_call(decision, 600, 200, "0.0002").model_copy(update={"attempt": 2})
    await apply_once(handlers.model_selected, decision, deps)
    for call in (first, retry):
        await apply_once(handlers.cost_recorded, call, deps)

    await apply_once(handlers.cost_adjusted, voided(retry, 1), deps)  # the retry was recorded by mistake
    await handlers.price_baselines(deps)
    one = await report_of(scope, deps)
    summary = await handlers.summary(GetMetricsSummary(org_id=scope.org_id), deps)
    assert summary.costs_recorded == 1 and one.fallback_rate == 0.0  # one call stands
    assert one.actual_savings.baseline_cost == baseline_at(1000, 200)  # priced at the call that stands
    assert one.actual_savings.total_saved == baseline_at(1000, 200) - Decimal("0.0004")

    await apply_once(handlers.cost_adjusted, voided(first, 1), deps)  # no call stands: nothing was saved
    await handlers.price_baselines(deps)
    none = await report_of(scope, deps, by="model")
    summary = await handlers.summary(GetMetricsSummary(org_id=scope.org_id), deps)
    assert (summary.costs_recorded, summary.actual_cost_usd) == (0, 0)
    assert (none.actual_savings.tasks, none.actual_savings.total_saved, none.actual_savings.baseline_cost) == (0, 0, 0)
    assert none.breakdown is not None and [b.actual_saved for b in none.breakdown] == [0]
    assert none.cost_savings.tasks == 1  # the decision's estimate stands: it was routed

    await apply_once(handlers.cost_adjusted, voided(first, 2, cost="0.0003"), deps)  # its invoice came after all
    await handlers.price_baselines(deps)
    back = await report_of(scope, deps)
    assert back.actual_savings.total_saved == baseline_at(1000, 200) - Decimal("0.0003")


async def test_a_baseline_without_a_price_is_noted_and_not_asked_again(
    deps: MetricsDeps, pricer: PricerTwin, admin: asyncpg.Connection
) -> None:
    scope = an_org()
    decision = a_decision(scope, baseline_model="no-such-model-anywhere")
    await apply_once(handlers.model_selected, decision, deps)
    await apply_once(handlers.cost_recorded, a_call(decision, 100, 10, "0.0001"), deps)

    await handlers.price_baselines(deps)
    await handlers.price_baselines(deps)
    report = await report_of(scope, deps)

    error = await admin.fetchval(
        "SELECT baseline_price_error FROM metrics.task_ledger WHERE task_id = $1", decision.task_id
    )
    assert error.startswith("unknown_price: no price is known for model 'no-such-model-anywhere'")
    assert len(pricer.asked) == 1
    assert (report.actual_savings.tasks, report.actual_unpriced_tasks) == (0, 1)


async def test_an_unavailable_cost_predictor_leaves_the_baseline_for_the_next_round(
    deps: MetricsDeps, pricer: PricerTwin
) -> None:
    scope = an_org()
    decision = a_decision(scope)
    await apply_once(handlers.model_selected, decision, deps)
    await apply_once(handlers.cost_recorded, a_call(decision, 1000, 200, "0.0004"), deps)

    pricer.down = True
    with pytest.raises(RemoteError) as err:
        await handlers.price_baselines(deps)  # the runtime logs it and runs the job again
    unpriced = await report_of(scope, deps)
    pricer.down = False
    await handlers.price_baselines(deps)
    priced = await report_of(scope, deps)

    assert err.value.code == "timeout"
    assert unpriced.actual_unpriced_tasks == 1
    assert priced.actual_unpriced_tasks == 0 and priced.actual_savings.baseline_cost == baseline_at(1000, 200)


# --- meters ---------------------------------------------------------------------------------


def meter(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def rolled_back_cost(event: CostRecorded, deps: MetricsDeps) -> None:
    async with deps.transaction() as uow:
        await handlers.cost_recorded(event, uow, deps)
        raise RuntimeError("rolled back after the handler ran")


async def test_meters_count_each_applied_event_once_and_only_after_its_commit(
    deps: MetricsDeps, registry: CollectorRegistry
) -> None:
    scope = an_org()
    decision = a_decision(scope, estimated="0.001", baseline="0.004")
    rejection = a_rejection(scope, uuid.uuid4(), NOW, RejectionReason.budget_exhausted)
    cost = a_call(decision, 1000, 200, "0.25")

    with pytest.raises(RuntimeError):  # a transaction that rolls back counts nothing, wakes nothing
        await rolled_back_cost(cost, deps)
    rolled_back = (meter(registry, "routewise_actual_cost_usd_total", model="gpt-4o-mini"), deps.to_price.is_set())
    for _ in range(2):  # each event, then its replay
        await apply_once(handlers.model_selected, decision, deps)
        await apply_once(handlers.task_rejected, rejection, deps)
        await apply_once(handlers.cost_recorded, cost, deps)

    assert rolled_back == (0.0, False)
    assert meter(registry, "routewise_decisions_total", strategy="complexity", tier="standard", policy="normal") == 1
    assert meter(registry, "routewise_rejections_total", reason="budget_exhausted") == 1
    assert meter(registry, "routewise_actual_cost_usd_total", model="gpt-4o-mini") == pytest.approx(0.25)
    assert meter(registry, "routewise_estimated_savings_usd_total") == pytest.approx(0.003)
    assert meter(registry, "routewise_decision_latency_seconds_count") == 1
    assert deps.to_price.is_set()
