"""cost-predictor over the bus: two replicas (in the test process), real NATS and Postgres."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal

import asyncpg
import nats
import pytest
from genai_prices import Usage, calc_price

from routewise.client import RoutewiseClient
from routewise.contracts.budget import BudgetStatus, CostRestrictions
from routewise.contracts.cost import (
    CompareTiers,
    CostEstimate,
    EstimateAccuracy,
    EstimateCost,
    GetEstimateAccuracy,
    ListPrices,
    Price,
    PriceList,
    PriceUsage,
)
from routewise.contracts.errors import RemoteError
from routewise.contracts.events import CostRecorded, Scope
from routewise.runtime.settings import Settings
from tests.conftest import Database, RunningStack, in_process_stack
from tests.helpers import calls_answering, eventually, record_trusted


@pytest.fixture(scope="module")
def cost_stack(nats_url: str, database: Database) -> Iterator[RunningStack]:
    """Two cost-predictor replicas sharing one schema and one namespace."""
    with in_process_stack(nats_url, database, {"cost_predictor": 2}) as stack:
        yield stack


async def ask_estimate(settings: Settings, **fields: object) -> CostEstimate:
    async with RoutewiseClient(settings) as rw:
        return await rw.request(settings.subjects.cost_estimate, EstimateCost(**fields), CostEstimate)  # type: ignore[arg-type]


async def raw_request(settings: Settings, subject: str, body: bytes) -> dict:  # type: ignore[type-arg]
    nc = await nats.connect(settings.nats_url)
    try:
        return json.loads((await nc.request(subject, body, timeout=5)).data)
    finally:
        await nc.close()


async def test_estimates_match_genai_prices_to_the_cent(cost_stack: RunningStack) -> None:
    models = {
        "gpt-4o": "openai",
        "claude-sonnet-4-5": "anthropic",
        "gemini-2.5-flash": "google",
        "gpt-5-mini": "openai",
    }
    result = await ask_estimate(
        cost_stack.settings,
        prompt="Summarise this quarter's sales figures. " * 50,
        models=list(models),
        expected_output_tokens=700,
        cached_input_tokens=100,
    )
    assert [e.model for e in result.estimates] == list(models)
    for est in result.estimates:
        want = calc_price(
            Usage(input_tokens=est.input_tokens, output_tokens=700, cache_read_tokens=100),
            model_ref=est.model,
            provider_id=models[est.model],
        ).total_price
        assert est.cost_usd_p50 == want  # exact: to the cent and beyond
        assert est.price_source == "genai-prices"
    assert result.recommendation is not None
    assert result.recommendation.model == min(result.estimates, key=lambda e: e.cost_usd_p50).model


async def test_a_dated_alias_and_a_cached_prompt_are_priced(cost_stack: RunningStack) -> None:
    settings = cost_stack.settings
    async with RoutewiseClient(settings) as rw:
        fresh = await rw.request(
            settings.subjects.cost_price,
            PriceUsage(model="gpt-4o-2024-08-06", input_tokens=10_000, output_tokens=0),
            Price,
        )
        cached = await rw.request(
            settings.subjects.cost_price,
            PriceUsage(model="gpt-4o-2024-08-06", input_tokens=10_000, output_tokens=0, cached_input_tokens=10_000),
            Price,
        )
    assert fresh.model == "gpt-4o"
    assert fresh.cost_usd == Decimal("0.025")
    assert cached.cost_usd == Decimal("0.0125")


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        (b'{"prompt": "  ", "models": ["gpt-4o"]}', "invalid_request", "prompt is empty"),
        (b'{"prompt": "hi", "models": []}', "invalid_request", "models"),
        (
            b'{"prompt": "hi", "models": ["gpt-4o"], "expected_output_tokens": -5}',
            "invalid_request",
            "greater than or equal to 0",
        ),
        (
            b'{"prompt": "hi", "models": ["gpt-4o"], "cached_input_tokens": 99999999999}',
            "invalid_request",
            "less than or equal",
        ),
        (b'{"prompt": "hi", "models": ["gpt-4o", "gpt-4o"]}', "invalid_request", "twice"),
        (b"not json at all", "invalid_request", "Invalid JSON"),
        (b'{"prompt": "hi", "models": ["gpt-4-o"]}', "unknown_price", "close matches: gpt-4o"),
        (b'{"prompt": "hi", "models": ["no-such-model-anywhere"]}', "unknown_price", "routewise prices set"),
    ],
)
async def test_bad_input_gets_a_structured_error_never_a_timeout(
    cost_stack: RunningStack, body: bytes, code: str, needle: str
) -> None:
    reply = await raw_request(cost_stack.settings, cost_stack.settings.subjects.cost_estimate, body)
    assert reply["error"]["code"] == code
    assert needle in reply["error"]["message"]


async def test_a_prompt_beyond_the_context_window_says_so_with_the_window(cost_stack: RunningStack) -> None:
    with pytest.raises(RemoteError) as err:
        await ask_estimate(cost_stack.settings, prompt="lorem ipsum dolor " * 25_000, models=["deepseek-chat"])
    assert err.value.code == "context_window_exceeded"
    assert "holds 64000" in err.value.message


async def test_overrides_are_audited_shared_by_replicas_and_survive_restarts(cost_stack: RunningStack) -> None:
    settings = cost_stack.settings
    model = f"private-{uuid.uuid4().hex[:6]}"
    saved = cost_stack.cli(
        "prices",
        "set",
        model,
        "--provider",
        "acme-gpu",
        "--input",
        "0.2",
        "--output",
        "0.6",
        "--context-window",
        "32000",
        "--by",
        "ana@ops",
        "--json",
    )
    assert saved.returncode == 0, saved.stderr
    assert json.loads(saved.stdout)["updated_by"] == "ana@ops"

    async def priced_by_every_replica() -> bool:
        # requests are spread over the two replicas by the queue group: ask often enough to reach both;
        # the other replica reloads on the change notice, a moment after the set was answered
        try:
            results = [
                await ask_estimate(settings, prompt="hello", models=[model], expected_output_tokens=1_000_000)
                for _ in range(8)
            ]
        except RemoteError as exc:
            if exc.code != "unknown_price":  # anything but "not reloaded yet" is a failure
                raise
            return False
        return all(r.estimates[0].cost_usd_p50 > Decimal("0.6") for r in results)

    assert await eventually(priced_by_every_replica)
    (est,) = (await ask_estimate(settings, prompt="hello", models=[model], expected_output_tokens=1_000_000)).estimates
    assert est.price_source == "override"
    assert est.cost_usd_p50 == Decimal("0.6") + Decimal("0.2") * est.input_tokens / 1_000_000

    cost_stack.restart("cost_predictor")
    listed = cost_stack.cli("prices", "list", "--json")
    assert model in [p["model"] for p in json.loads(listed.stdout)["prices"]]

    removed = cost_stack.cli("prices", "remove", model, "--provider", "acme-gpu", "--by", "ana@ops")
    assert removed.returncode == 0, removed.stderr
    again = cost_stack.cli("prices", "remove", model, "--provider", "acme-gpu", "--json")
    assert json.loads(again.stdout)["error"]["code"] == "not_found"
    with pytest.raises(RemoteError) as err:
        await ask_estimate(settings, prompt="hello", models=[model])
    assert err.value.code == "unknown_price"

    conn = await asyncpg.connect(cost_stack.database.admin_dsn)
    try:
        audit = await conn.fetch(
            "SELECT actor, action, before, after FROM cost_predictor.price_audit WHERE model = $1 ORDER BY id", model
        )
    finally:
        await conn.close()
    assert [(a["actor"], a["action"]) for a in audit] == [("ana@ops", "set"), ("ana@ops", "remove")]
    assert audit[0]["before"] is None
    assert json.loads(audit[0]["after"])["input_mtok"] == "0.200000000000"
    assert json.loads(audit[1]["before"])["output_mtok"] == "0.600000000000"


async def test_an_override_of_a_known_model_wins_over_genai_prices(cost_stack: RunningStack) -> None:
    saved = cost_stack.cli(
        "prices",
        "set",
        "gpt-4o",
        "--provider",
        "openai",
        "--input",
        "1",
        "--output",
        "4",
        "--by",
        "negotiated",
    )
    assert saved.returncode == 0, saved.stderr
    try:

        async def discounted() -> Price | None:
            async with RoutewiseClient(cost_stack.settings) as rw:
                p = await rw.request(
                    cost_stack.settings.subjects.cost_price,
                    PriceUsage(model="gpt-4o", input_tokens=1_000_000, output_tokens=1_000_000),
                    Price,
                )
            return p if p.source == "override" else None

        assert (await eventually(discounted)).cost_usd == Decimal(5)
        shown = cost_stack.cli("prices", "list", "gpt-4o", "claude-sonnet-4-5", "--json")
        entries = {p["model"]: p for p in json.loads(shown.stdout)["prices"]}
        assert entries["gpt-4o"]["source"] == "override"
        assert entries["claude-sonnet-4-5"]["source"] == "genai-prices"
        assert entries["claude-sonnet-4-5"]["tiered"] is True
    finally:
        cost_stack.cli("prices", "remove", "gpt-4o", "--provider", "openai")


async def test_output_prediction_learns_from_recorded_costs(cost_stack: RunningStack) -> None:
    settings = cost_stack.settings
    task_type = f"learn_{uuid.uuid4().hex[:6]}"
    before = (await ask_estimate(settings, prompt="Explain TCP", models=["gpt-4o"], task_type=task_type)).estimates[0]
    assert (before.output_tokens_p50, before.output_source) == (400, "prior")
    async with RoutewiseClient(settings) as rw:
        await calls_answering(rw, task_type, "gpt-4o", 1200)

    async def learned() -> int | None:
        (e,) = (await ask_estimate(settings, prompt="Explain TCP", models=["gpt-4o"], task_type=task_type)).estimates
        return e.output_tokens_p50 if e.output_samples >= 100 else None  # 150 observations decay to ~106

    p50 = await eventually(learned, timeout=30)
    assert abs(p50 - 1200) / 1200 < 0.15  # from a prior of 400 to the real median
    assert abs(p50 - 1200) < abs(before.output_tokens_p50 - 1200)


async def test_each_estimate_is_compared_with_its_actual_cost(cost_stack: RunningStack) -> None:
    settings = cost_stack.settings
    task_type = f"acc_{uuid.uuid4().hex[:6]}"
    task_id = uuid.uuid4()
    est = await ask_estimate(
        settings,
        prompt="Write a haiku about the sea",
        models=["gpt-4o", "gpt-4o-mini"],
        task_type=task_type,
        task_id=task_id,
    )
    predicted = {e.model: e for e in est.estimates}["gpt-4o-mini"]
    actual_cost = predicted.cost_usd_p50 * 2  # the call cost twice the estimate
    async with RoutewiseClient(settings) as rw:
        await record_trusted(
            rw,
            CostRecorded(
                task_id=task_id,
                scope=Scope(org_id="acc"),
                task_type=task_type,
                model="gpt-4o-mini",
                provider="openai",
                input_tokens=predicted.input_tokens,
                output_tokens=predicted.output_tokens_p50 * 2,
                cost_usd=actual_cost,
            ),
        )

        async def row() -> EstimateAccuracy | None:
            r = await rw.request(
                settings.subjects.cost_accuracy, GetEstimateAccuracy(task_type=task_type), EstimateAccuracy
            )
            return r if r.rows else None

        accuracy = await eventually(row)
    (r,) = accuracy.rows
    assert (r.model, r.samples) == ("gpt-4o-mini", 1)
    assert r.cost_mape_percent == pytest.approx(50.0)
    assert r.cost_bias_percent == pytest.approx(-50.0)  # estimates ran low
    assert r.output_bias_percent == pytest.approx(-50.0)


async def test_tier_comparison_over_the_bus_and_cli(cost_stack: RunningStack) -> None:
    shown = cost_stack.cli("tiers", "--input-tokens", "2000", "--output-tokens", "800", "--json")
    assert shown.returncode == 0, shown.stderr
    tiers = json.loads(shown.stdout)["tiers"]
    assert [t["tier"] for t in tiers] == ["micro", "standard", "versatile", "heavy", "complex"]
    assert all(Decimal(t["cost_min_usd"]) <= Decimal(t["cost_max_usd"]) for t in tiers)
    table = cost_stack.cli("tiers")
    assert "complex" in table.stdout and "quality" in table.stdout
    async with RoutewiseClient(cost_stack.settings) as rw:
        with pytest.raises(RemoteError) as err:
            await rw.request(
                cost_stack.settings.subjects.cost_compare_tiers,
                CompareTiers.model_construct(input_tokens=10, output_tokens=5, cached_input_tokens=50),
                PriceList,
            )
    assert err.value.code == "invalid_request"


async def test_cli_estimate_prints_a_table_and_json(cost_stack: RunningStack) -> None:
    out = cost_stack.cli(
        "estimate",
        "Plan a database migration",
        "-m",
        "gpt-4o",
        "-m",
        "claude-haiku-4-5",
        "--min-tier",
        "heavy",
    )
    assert out.returncode == 0, out.stderr
    assert "gpt-4o" in out.stdout and "recommended: gpt-4o" in out.stdout
    data = json.loads(cost_stack.cli("estimate", "hi", "--json").stdout)
    assert len(data["estimates"]) == 14
    bad = cost_stack.cli("estimate", "hi", "-m", "gpt-4-o", "--json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["error"]["code"] == "unknown_price"
    listed = ListPrices(models=["gpt-4o"])
    assert listed.models == ["gpt-4o"]


async def test_budget_impact_is_reported_when_the_org_has_a_budget(cost_stack: RunningStack) -> None:
    """cost-predictor asks budget.status for the org; a stand-in answers as budget-enforcer will
    once budgets have limits (issue 4): $10 left of $40."""
    settings = cost_stack.settings
    nc = await nats.connect(settings.nats_url)

    async def budget_enforcer(msg: nats.aio.msg.Msg) -> None:
        org = json.loads(msg.data)["scope"]["org_id"]
        status = BudgetStatus(
            scope_type="org",
            scope_id=org,
            budgets=[],
            aggregate_status="warning",
            cost_restrictions=CostRestrictions(),
            spent_usd=Decimal(30),
            costs_recorded=12,
            limit_usd=Decimal(40),
            remaining_usd=Decimal(10),
        )
        await msg.respond(status.model_dump_json().encode())

    sub = await nc.subscribe(settings.subjects.budget_status, cb=budget_enforcer)
    try:
        result = await ask_estimate(
            settings,
            prompt="Summarise the incident",
            models=["gpt-5-nano", "claude-opus-4-1"],
            expected_output_tokens=20_000,
            scope=Scope(org_id="acme"),
        )
        without_scope = await ask_estimate(settings, prompt="Summarise the incident", models=["gpt-5-nano"])
    finally:
        await sub.unsubscribe()
        await nc.close()
    assert result.budget_status is not None
    assert result.budget_status.remaining_usd == Decimal(10)
    assert result.budget_status.percent_remaining == 25.0
    impact = {e.model: e.budget_impact for e in result.estimates}
    assert impact == {"gpt-5-nano": "low", "claude-opus-4-1": "high"}  # $0.008 vs $1.50 of $10 left
    assert without_scope.budget_status is None
    assert without_scope.estimates[0].budget_impact is None
