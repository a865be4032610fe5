"""cost-predictor's handlers called directly: real Postgres, budget-enforcer and the other
replicas as an in-memory twin."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest
from genai_prices import Usage, calc_price

from routewise.contracts.budget import BudgetStatus, CostRestrictions
from routewise.contracts.catalog import default_catalog
from routewise.contracts.cost import (
    CompareTiers,
    EstimateCost,
    GetEstimateAccuracy,
    ListPrices,
    PriceUsage,
    RemovePrice,
    SetPrice,
)
from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import CandidateScore, CostRecorded, Scope, Tier
from routewise.estimates import Estimator
from routewise.runtime.service import apply_once
from routewise.runtime.settings import Settings
from routewise.services.cost_predictor import handlers
from routewise.services.cost_predictor.handlers import CostDeps
from routewise.services.cost_predictor.ports import MemoryProfileStore
from routewise.services.cost_predictor.pricing import PriceBook
from tests.handlers.cost_metrics_twins import CostBusTwin
from tests.helpers import a_selection


@pytest.fixture
def bus() -> CostBusTwin:
    return CostBusTwin()


@pytest.fixture
async def pool(service_pool: Callable[[str], Awaitable[asyncpg.Pool]]) -> asyncpg.Pool:
    return await service_pool("cost_predictor")


def a_replica(pool: asyncpg.Pool, settings: Settings, bus: CostBusTwin) -> CostDeps:
    catalog = default_catalog()
    return CostDeps(pool=pool, settings=settings, catalog=catalog, book=PriceBook(catalog), bus=bus)


@pytest.fixture
async def deps(pool: asyncpg.Pool, settings: Settings, bus: CostBusTwin) -> CostDeps:
    deps = a_replica(pool, settings, bus)
    await handlers.reload_prices(deps)
    return deps


def a_call(task_type: str, output_tokens: int, **fields: object) -> CostRecorded:
    return CostRecorded.model_validate(
        {
            "task_id": uuid.uuid4(),
            "scope": Scope(org_id="learn"),
            "task_type": task_type,
            "model": "gpt-4o",
            "provider": "openai",
            "input_tokens": 50,
            "output_tokens": output_tokens,
            "cost_usd": Decimal("0.01"),
            **fields,
        }
    )


def a_task_type() -> str:
    return f"t_{uuid.uuid4().hex[:8]}"


# --- prices ---------------------------------------------------------------------------------


async def test_an_estimate_costs_what_genai_prices_says(deps: CostDeps) -> None:
    models = {"gpt-4o": "openai", "claude-sonnet-4-5": "anthropic", "gemini-2.5-flash": "google"}

    result = await handlers.estimate(
        EstimateCost(
            prompt="Summarise this quarter's sales figures. " * 50,
            models=list(models),
            expected_output_tokens=700,
            cached_input_tokens=100,
        ),
        deps,
    )

    assert [e.model for e in result.estimates] == list(models)
    for est in result.estimates:
        want = calc_price(
            Usage(input_tokens=est.input_tokens, output_tokens=700, cache_read_tokens=100),
            model_ref=est.model,
            provider_id=models[est.model],
        ).total_price
        assert est.cost_usd_p50 == want
        assert est.price_source == "genai-prices"
    assert result.recommendation is not None
    assert result.recommendation.model == min(result.estimates, key=lambda e: e.cost_usd_p50).model
    assert result.budget_status is None


async def test_a_dated_alias_is_priced_as_its_model_and_cached_input_costs_less(deps: CostDeps) -> None:
    fresh = await handlers.price_usage(
        PriceUsage(model="gpt-4o-2024-08-06", input_tokens=10_000, output_tokens=0), deps
    )
    cached = await handlers.price_usage(
        PriceUsage(model="gpt-4o-2024-08-06", input_tokens=10_000, output_tokens=0, cached_input_tokens=10_000), deps
    )

    assert (fresh.model, fresh.cost_usd) == ("gpt-4o", Decimal("0.025"))
    assert cached.cost_usd == Decimal("0.0125")


async def test_an_unknown_model_is_an_error_with_close_matches_never_free(deps: CostDeps) -> None:
    with pytest.raises(RoutewiseError) as typo:
        await handlers.estimate(EstimateCost(prompt="hi", models=["gpt-4-o"]), deps)
    with pytest.raises(RoutewiseError) as unknown:
        await handlers.price_usage(PriceUsage(model="no-such-model-anywhere", input_tokens=1, output_tokens=1), deps)

    assert typo.value.code == "unknown_price" and "close matches: gpt-4o" in typo.value.message
    assert unknown.value.code == "unknown_price" and "routewise prices set" in unknown.value.message


async def test_a_prompt_beyond_every_context_window_says_so(deps: CostDeps) -> None:
    with pytest.raises(RoutewiseError) as err:
        await handlers.estimate(EstimateCost(prompt="lorem ipsum dolor " * 25_000, models=["deepseek-chat"]), deps)

    assert err.value.code == "context_window_exceeded" and "holds 64000" in err.value.message


async def test_tiers_are_compared_from_micro_to_complex(deps: CostDeps) -> None:
    result = await handlers.tiers(CompareTiers(input_tokens=2000, output_tokens=800), deps)

    assert [t.tier for t in result.tiers] == list(Tier)
    assert all(t.cost_min_usd <= t.cost_max_usd for t in result.tiers)


async def test_a_price_override_changes_the_price_is_audited_and_announced(
    deps: CostDeps, bus: CostBusTwin, admin: asyncpg.Connection
) -> None:
    million = PriceUsage(model="gpt-4o", input_tokens=1_000_000, output_tokens=1_000_000)
    before = await handlers.price_usage(million, deps)
    try:
        saved = await handlers.set_price(
            SetPrice(
                model="gpt-4o",
                provider="openai",
                input_mtok=Decimal(1),
                output_mtok=Decimal(4),
                actor="negotiated",
            ),
            deps,
        )
        discounted = await handlers.price_usage(million, deps)
        shown = await handlers.list_prices(ListPrices(models=["gpt-4o", "claude-sonnet-4-5"]), deps)
        overrides = await handlers.list_prices(ListPrices(), deps)
    finally:
        await handlers.remove_price(RemovePrice(model="gpt-4o", provider="openai", actor="negotiated"), deps)
    after = await handlers.price_usage(million, deps)

    assert saved.updated_by == "negotiated"
    assert (discounted.cost_usd, discounted.source) == (Decimal(5), "override")
    assert {p.model: p.source for p in shown.prices} == {"gpt-4o": "override", "claude-sonnet-4-5": "genai-prices"}
    assert [(p.model, p.provider) for p in overrides.prices] == [("gpt-4o", "openai")]
    assert (after.cost_usd, after.source) == (before.cost_usd, "genai-prices")
    assert bus.announcements == 2  # the other replicas are told of the set and of the removal
    audit = await admin.fetch(
        "SELECT actor, action, before, after FROM cost_predictor.price_audit WHERE model = 'gpt-4o' ORDER BY id"
    )
    assert [(a["actor"], a["action"]) for a in audit] == [("negotiated", "set"), ("negotiated", "remove")]
    assert json.loads(audit[0]["after"])["output_mtok"] == "4.000000000000"


async def test_removing_a_price_that_is_not_there_is_not_found(deps: CostDeps, bus: CostBusTwin) -> None:
    with pytest.raises(RoutewiseError) as err:
        await handlers.remove_price(RemovePrice(model="never-set", provider="acme-gpu", actor="ops"), deps)

    assert err.value.code == "not_found"
    assert bus.announcements == 0


async def test_an_override_set_on_another_replica_is_used_once_announced(
    deps: CostDeps, pool: asyncpg.Pool, settings: Settings
) -> None:
    other = a_replica(pool, settings, CostBusTwin())
    model = f"private-{uuid.uuid4().hex[:6]}"
    usage = PriceUsage(model=model, provider="acme-gpu", input_tokens=1_000_000, output_tokens=1_000_000)
    await handlers.set_price(
        SetPrice(model=model, provider="acme-gpu", input_mtok=Decimal("0.2"), output_mtok=Decimal("0.6"), actor="ana"),
        other,
    )

    with pytest.raises(RoutewiseError) as not_yet:
        await handlers.price_usage(usage, deps)
    await handlers.reload_prices(deps)  # the cost_prices_changed notice (or the 30 s job)
    priced = await handlers.price_usage(usage, deps)
    await handlers.remove_price(RemovePrice(model=model, provider="acme-gpu", actor="ana"), other)

    assert not_yet.value.code == "unknown_price"
    assert (priced.cost_usd, priced.source, priced.provider) == (Decimal("0.8"), "override", "acme-gpu")


# --- learning -------------------------------------------------------------------------------


async def test_recorded_costs_teach_the_output_profile_once_per_event(deps: CostDeps) -> None:
    task_type = a_task_type()
    ask = EstimateCost(prompt="Explain TCP", models=["gpt-4o"], task_type=task_type)
    (before,) = (await handlers.estimate(ask, deps)).estimates
    calls = [a_call(task_type, 1200) for _ in range(40)]

    applied = [await apply_once(handlers.learn_cost, call, deps) for call in calls]
    (learned,) = (await handlers.estimate(ask, deps)).estimates
    replayed = await apply_once(handlers.learn_cost, calls[-1], deps)
    failed = await apply_once(handlers.learn_cost, a_call(task_type, 5, success=False, error_type="rate_limited"), deps)
    (after,) = (await handlers.estimate(ask, deps)).estimates

    assert (before.output_tokens_p50, before.output_source) == (400, "prior")
    assert all(applied) and not replayed and failed
    assert learned.output_source == "learned"
    assert 900 < learned.output_tokens_p50 <= 1200  # from the prior of 400 towards what the calls answered
    assert learned.output_samples == pytest.approx(sum(0.995**k for k in range(40)), abs=0.01)
    # neither the replay nor the failed call counts
    assert (after.output_tokens_p50, after.output_samples) == (learned.output_tokens_p50, learned.output_samples)


async def test_what_recorded_costs_taught_is_published_for_the_selector(deps: CostDeps) -> None:
    task_type = a_task_type()
    store = MemoryProfileStore()
    deps.profiles = store
    for call in [a_call(task_type, 1200) for _ in range(10)]:
        await apply_once(handlers.learn_cost, call, deps)
    assert task_type in deps.profiles_to_publish
    await handlers.publish_profiles(deps)
    await handlers.publish_profiles(deps)  # nothing new: nothing published again

    published = store.published[task_type]
    assert list(published.models) == ["gpt-4o"] and deps.profiles_to_publish == set()
    ask = EstimateCost(prompt="Explain TCP", models=["gpt-4o"], task_type=task_type)
    (theirs,) = (await handlers.estimate(ask, deps)).estimates  # what cost.estimate answers now
    mine = Estimator(deps.book).estimate(ask, Estimator(deps.book).resolve_all(ask.models), published.models)
    assert mine.estimates == [theirs] and theirs.output_source == "learned"


async def test_a_cost_that_overtakes_its_decision_is_compared_when_the_decision_comes(deps: CostDeps) -> None:
    """The selector's estimate reaches cost-predictor with ModelSelected; a trusted publisher's
    cost of the task may be applied before it, and is compared once it is there."""
    task_type, task_id = a_task_type(), uuid.uuid4()
    call = a_call(task_type, 600, task_id=task_id, model="gpt-4o-mini", cost_usd=Decimal("0.0004"))
    await apply_once(handlers.learn_cost, call, deps)  # no estimate yet: nothing to compare
    assert (await handlers.estimate_accuracy(GetEstimateAccuracy(task_type=task_type), deps)).rows == []

    mini = CandidateScore(
        model="gpt-4o-mini",
        provider="openai",
        tier=Tier.standard,
        predicted_quality=0.8,
        confidence=0.5,
        estimated_cost_usd=Decimal("0.0002"),
        output_tokens_p50=300,
        output_tokens_p90=750,
    )
    decision = a_selection(call.scope, "gpt-4o-mini", task_id, "factual", task_type).model_copy(
        update={"candidates": [mini]}
    )
    await apply_once(handlers.learn_decision, decision, deps)
    await apply_once(handlers.learn_decision, decision.model_copy(update={"event_id": uuid.uuid4()}), deps)

    (row,) = (await handlers.estimate_accuracy(GetEstimateAccuracy(task_type=task_type), deps)).rows
    assert (row.model, row.samples) == ("gpt-4o-mini", 1)  # once, though the decision came twice
    assert row.cost_bias_percent == pytest.approx(-50.0)  # the estimate ran low: 0.0002 for 0.0004
    assert row.output_bias_percent == pytest.approx(-50.0)
    assert row.p90_coverage_percent == 100.0

    # decided again (e.g. after an approval), on another model: what it said of the first stays
    other = mini.model_copy(update={"model": "gpt-4o", "estimated_cost_usd": Decimal("0.002")})
    again = decision.model_copy(update={"event_id": uuid.uuid4(), "model": "gpt-4o", "candidates": [other]})
    await apply_once(handlers.learn_decision, again, deps)
    second = a_call(task_type, 600, task_id=task_id, model="gpt-4o-mini", cost_usd=Decimal("0.0004"))
    await apply_once(handlers.learn_cost, second, deps)
    (row,) = (await handlers.estimate_accuracy(GetEstimateAccuracy(task_type=task_type), deps)).rows
    assert (row.model, row.samples) == ("gpt-4o-mini", 2)


async def test_each_kept_estimate_is_compared_with_its_actual_cost(deps: CostDeps) -> None:
    task_type, task_id = a_task_type(), uuid.uuid4()
    result = await handlers.estimate(
        EstimateCost(
            prompt="Write a haiku about the sea", models=["gpt-4o", "gpt-4o-mini"], task_type=task_type, task_id=task_id
        ),
        deps,
    )
    predicted = {e.model: e for e in result.estimates}["gpt-4o-mini"]
    call = a_call(
        task_type,
        predicted.output_tokens_p50 * 2,
        task_id=task_id,
        model="gpt-4o-mini",
        input_tokens=predicted.input_tokens,
        cost_usd=predicted.cost_usd_p50 * 2,  # the call cost twice the estimate
        occurred_at=datetime.now(UTC),
    )

    await apply_once(handlers.learn_cost, call, deps)
    await apply_once(handlers.learn_cost, call, deps)  # a replay
    accuracy = await handlers.estimate_accuracy(GetEstimateAccuracy(task_type=task_type), deps)

    (row,) = accuracy.rows
    assert (row.model, row.samples) == ("gpt-4o-mini", 1)
    assert row.cost_mape_percent == pytest.approx(50.0)
    assert row.cost_bias_percent == pytest.approx(-50.0)  # the estimate ran low
    assert row.output_bias_percent == pytest.approx(-50.0)


# --- budget impact --------------------------------------------------------------------------


def a_status(org: str, spent: str, limit: str) -> BudgetStatus:
    return BudgetStatus(
        scope_type="org",
        scope_id=org,
        budgets=[],
        aggregate_status="warning",
        cost_restrictions=CostRestrictions(),
        spent_usd=Decimal(spent),
        costs_recorded=12,
        limit_usd=Decimal(limit),
        remaining_usd=Decimal(limit) - Decimal(spent),
    )


async def test_budget_impact_is_reported_when_budget_enforcer_knows_the_budget(
    deps: CostDeps, bus: CostBusTwin
) -> None:
    bus.statuses["acme"] = a_status("acme", spent="30", limit="40")
    ask = EstimateCost(
        prompt="Summarise the incident",
        models=["gpt-5-nano", "claude-opus-4-1"],
        expected_output_tokens=20_000,
        scope=Scope(org_id="acme", team_id="sre"),
    )

    result = await handlers.estimate(ask, deps)
    unknown = await handlers.estimate(ask.model_copy(update={"scope": Scope(org_id="nobody")}), deps)
    without_scope = await handlers.estimate(ask.model_copy(update={"scope": None}), deps)

    assert result.budget_status is not None
    assert (result.budget_status.remaining_usd, result.budget_status.percent_remaining) == (Decimal(10), 25.0)
    assert {e.model: e.budget_impact for e in result.estimates} == {"gpt-5-nano": "low", "claude-opus-4-1": "high"}
    assert bus.asked[0].scope == Scope(org_id="acme", team_id="sre")  # the whole chain is asked about
    # budget-enforcer not answering costs the estimate its budget impact, never the estimate itself
    assert unknown.budget_status is None and unknown.estimates[0].budget_impact is None
    assert without_scope.budget_status is None and len(bus.asked) == 2
