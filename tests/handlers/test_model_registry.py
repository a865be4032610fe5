"""Models registered at run time, as cost-predictor keeps them: its handlers called directly on
its real Postgres schema, the catalog it publishes held in memory."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal

import asyncpg
import pytest

from routewise.contracts.catalog import CatalogModel, ListModels, RegisterModel, RemoveModel, default_catalog
from routewise.contracts.cost import EstimateCost, RemovePrice, SetPrice
from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import Tier
from routewise.runtime.settings import Settings
from routewise.services.cost_predictor import handlers
from routewise.services.cost_predictor import repository as repo
from routewise.services.cost_predictor.handlers import CostDeps
from routewise.services.cost_predictor.ports import MemoryCatalogStore
from routewise.services.cost_predictor.pricing import PriceBook
from tests.handlers.cost_metrics_twins import CostBusTwin

PROMPT = "Say hello to the new model."


@pytest.fixture
async def pool(service_pool: Callable[[str], Awaitable[asyncpg.Pool]]) -> asyncpg.Pool:
    return await service_pool("cost_predictor")


def a_replica(pool: asyncpg.Pool, settings: Settings, seed: list[CatalogModel] | None = None) -> CostDeps:
    catalog = default_catalog().with_registered(seed or [])
    return CostDeps(
        pool=pool,
        settings=settings,
        catalog=catalog,
        book=PriceBook(catalog),
        bus=CostBusTwin(),
        seed=catalog,
        store=MemoryCatalogStore(),
    )


@pytest.fixture
async def deps(pool: asyncpg.Pool, settings: Settings) -> CostDeps:
    deps = a_replica(pool, settings)
    await handlers.reload_prices(deps)
    return deps


def a_model_id() -> str:
    return f"acme-{uuid.uuid4().hex[:8]}"


def registration(model: str, **fields: object) -> RegisterModel:
    values: dict[str, object] = {
        "id": model,
        "provider": "mock",
        "tier": "micro",
        "quality_prior": 0.9,
        "context_window": 32_000,
        "capabilities": ["code"],
        "input_mtok": "0.01",
        "output_mtok": "0.02",
        "actor": "ops@acme",
    }
    return RegisterModel.model_validate(values | fields)


async def test_a_registered_model_with_its_price_is_published_listed_priced_and_audited(deps: CostDeps) -> None:
    model = a_model_id()
    before = deps.revision
    entry = await handlers.register_model(registration(model), deps)
    assert entry.source == "registered" and entry.routable and entry.reason is None
    assert entry.registered_by == "ops@acme"
    assert entry.price is not None and entry.price.source == "override"
    assert (entry.price.input_mtok, entry.price.output_mtok) == (Decimal("0.01"), Decimal("0.02"))

    store = deps.store
    assert isinstance(store, MemoryCatalogStore) and store.published is not None
    assert store.published.revision == deps.revision > before  # every service gets the new revision
    published = {m.id: m for m in store.published.models}
    assert published[model].provider == "mock" and published[model].tier is Tier.micro
    assert any(p.model == model and p.input_mtok == Decimal("0.01") for p in store.published.overrides)
    assert model not in store.published.unpriced
    assert deps.bus.announcements == 1  # type: ignore[attr-defined]  # the other replicas reload

    estimate = await handlers.estimate(EstimateCost(prompt=PROMPT, models=[model], expected_output_tokens=1_000), deps)
    est = estimate.estimates[0]
    assert est.price_source == "override" and est.tier is Tier.micro
    assert est.cost_usd_p50 == (Decimal("0.01") * est.input_tokens + Decimal("0.02") * 1_000) / 1_000_000

    listed = await handlers.list_models(ListModels(), deps)
    assert [e.model.id for e in listed.models if e.source == "registered" and e.model.id == model] == [model]
    audit = await repo.model_audit(deps.pool, model)
    assert [(a["actor"], a["action"]) for a in audit] == [("ops@acme", "register")]


async def test_a_model_genai_prices_does_not_know_cannot_be_registered_without_a_price(deps: CostDeps) -> None:
    model = a_model_id()
    unpriced = registration(model, input_mtok=None, output_mtok=None)
    with pytest.raises(RoutewiseError, match="register it with its price") as raised:
        await handlers.register_model(unpriced, deps)
    assert raised.value.code == "unknown_price"
    listed = await handlers.list_models(ListModels(), deps)
    assert model not in {e.model.id for e in listed.models}  # nothing was stored


async def test_a_model_genai_prices_knows_is_registered_at_its_price(deps: CostDeps) -> None:
    entry = await handlers.register_model(
        registration("gpt-4.1-mini", provider="openai", tier="standard", input_mtok=None, output_mtok=None), deps
    )
    assert entry.routable and entry.price is not None and entry.price.source == "genai-prices"
    assert entry.price.input_mtok == Decimal("0.4")
    await handlers.remove_model(RemoveModel(id="gpt-4.1-mini", actor="ops@acme"), deps)


async def test_a_registration_with_a_shipped_id_wins_and_its_removal_brings_the_shipped_model_back(
    deps: CostDeps,
) -> None:
    shipped = deps.seed.require("gpt-4o")
    entry = await handlers.register_model(
        registration(
            "gpt-4o", provider="openai", tier="versatile", quality_prior=0.5, input_mtok=None, output_mtok=None
        ),
        deps,
    )
    assert entry.replaces_shipped and entry.model.tier is Tier.versatile
    assert deps.catalog.require("gpt-4o").quality_prior == 0.5
    assert [m.id for m in deps.catalog.models].count("gpt-4o") == 1

    remaining = await handlers.remove_model(RemoveModel(id="gpt-4o", actor="ops@acme"), deps)
    back = next(e for e in remaining.models if e.model.id == "gpt-4o")
    assert back.source == "shipped" and back.model == shipped
    assert [a["action"] for a in await repo.model_audit(deps.pool, "gpt-4o")][-2:] == ["register", "remove"]


async def test_only_a_registered_model_can_be_removed(deps: CostDeps) -> None:
    with pytest.raises(RoutewiseError, match="not a registered model") as raised:
        await handlers.remove_model(RemoveModel(id=a_model_id(), actor="ops"), deps)
    assert raised.value.code == "not_found"
    with pytest.raises(RoutewiseError, match="a shipped model"):
        await handlers.remove_model(RemoveModel(id="gpt-4o-mini", actor="ops"), deps)


async def test_a_removed_model_keeps_its_price_for_the_costs_still_to_come(deps: CostDeps) -> None:
    model = a_model_id()
    await handlers.register_model(registration(model), deps)
    await handlers.remove_model(RemoveModel(id=model, actor="ops"), deps)
    assert deps.catalog.get(model) is None
    assert deps.book.resolve(model).source == "override"  # a CostRecorded of a call in flight is priced
    await handlers.remove_price(RemovePrice(model=model, provider="mock", actor="ops"), deps)


async def test_a_replica_behind_the_asker_s_revision_loads_the_catalog_before_it_estimates(
    pool: asyncpg.Pool, settings: Settings, deps: CostDeps
) -> None:
    other = a_replica(pool, settings)
    await handlers.reload_prices(other)  # started before the registration, not told of it yet
    model = a_model_id()
    await handlers.register_model(registration(model), deps)
    with pytest.raises(RoutewiseError, match="no price is known"):
        await handlers.estimate(EstimateCost(prompt=PROMPT, models=[model]), other)
    estimate = await handlers.estimate(
        EstimateCost(prompt=PROMPT, models=[model], catalog_revision=deps.revision), other
    )
    assert estimate.estimates[0].price_source == "override"
    assert other.revision == deps.revision


async def test_a_catalog_model_without_a_price_does_not_stop_the_service_and_is_routable_once_priced(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    model = a_model_id()
    shipped = CatalogModel(id=model, provider="mock", tier=Tier.micro, quality_prior=0.8, context_window=8_000)
    deps = a_replica(pool, settings, seed=[shipped])
    await handlers.reload_prices(deps)  # what build does at start-up, without refusing
    listed = {e.model.id: e for e in (await handlers.list_models(ListModels(), deps)).models}
    assert not listed[model].routable
    assert f"routewise prices set {model} --provider mock" in (listed[model].reason or "")
    store = deps.store
    assert isinstance(store, MemoryCatalogStore) and store.published is not None
    assert model in store.published.unpriced  # the selector skips it

    await handlers.set_price(
        SetPrice(model=model, provider="mock", input_mtok=Decimal("0.1"), output_mtok=Decimal("0.2"), actor="ops"),
        deps,
    )
    listed = {e.model.id: e for e in (await handlers.list_models(ListModels(), deps)).models}
    assert listed[model].routable and listed[model].reason is None
    assert store.published.revision == deps.revision and model not in store.published.unpriced
    await handlers.remove_price(RemovePrice(model=model, provider="mock", actor="ops"), deps)
    assert model in store.published.unpriced  # unpriced again: not routable again
