"""cost-predictor's bus adapters: estimates, prices and overrides, tier comparison, accuracy;
learns output tokens and estimate errors from CostRecorded."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import structlog
from faststream.nats import NatsRouter

from services.cost_predictor import repository as repo
from services.cost_predictor.domain import Estimator, check_catalog_priced, compare_tiers, price, price_entry
from services.cost_predictor.pricing import PriceBook
from shared.bus import reply, request
from shared.catalog import default_catalog
from shared.db import Connection, unit_of_work
from shared.errors import RemoteError, RoutewiseError
from shared.events import CostRecorded
from shared.requests import (
    BudgetBasis,
    BudgetStatus,
    CompareTiers,
    CostEstimate,
    EstimateAccuracy,
    EstimateCost,
    GetBudgetStatus,
    GetEstimateAccuracy,
    ListPrices,
    Price,
    PriceEntry,
    PriceList,
    PriceUsage,
    RemovePrice,
    SetPrice,
    TierComparison,
)
from shared.service import Runtime, ServiceSpec

NAME = "cost_predictor"
RELOAD_EVERY_S = 30.0
BUDGET_TIMEOUT_S = 0.5
log = structlog.get_logger(__name__)


@dataclass
class Prices:
    """The current price book; rebuilt whenever the overrides change (here or on a replica)."""

    book: PriceBook

    @property
    def estimator(self) -> Estimator:
        return Estimator(self.book)


def register(router: NatsRouter, rt: Runtime) -> None:
    catalog = default_catalog()
    prices = Prices(PriceBook(catalog))
    check_catalog_priced(prices.book)
    subjects = rt.subjects

    async def reload() -> None:
        prices.book = PriceBook(catalog, await repo.load_overrides(rt.pool))

    async def reload_forever() -> None:
        while True:
            await asyncio.sleep(RELOAD_EVERY_S)
            try:
                await reload()
            except Exception:
                log.exception("reloading price overrides failed; keeping the previous ones")

    async def started(_: Runtime) -> None:
        await reload()
        rt.spawn(reload_forever(), "reload-price-overrides")

    async def budget_basis(req: EstimateCost) -> BudgetBasis | None:
        """What remains of the tightest budget on the request's scope chain, if budget-enforcer knows."""
        if req.scope is None:
            return None
        try:
            status = await request(
                rt.broker,
                subjects.budget_status,
                GetBudgetStatus(scope=req.scope),
                BudgetStatus,
                timeout=BUDGET_TIMEOUT_S,
            )
        except RemoteError as exc:
            log.info("no budget impact: budget-enforcer did not answer", code=exc.code)
            return None
        if status.remaining_usd is None or not status.limit_usd:
            return None
        tightest = min(status.budgets, key=lambda b: b.remaining_usd, default=None)
        return BudgetBasis(
            scope_type=tightest.scope_type if tightest else status.scope_type,
            scope_id=tightest.scope_id if tightest else status.scope_id,
            remaining_usd=status.remaining_usd,
            percent_remaining=round(float(status.remaining_usd / status.limit_usd * 100), 2),
        )

    async def estimate(req: EstimateCost) -> CostEstimate:
        estimator = prices.estimator
        models = estimator.resolve_all(req.models)
        profiles = await repo.profiles(rt.pool, req.task_type, [m.id for m in models])
        result = estimator.estimate(req, models, profiles, await budget_basis(req))
        if req.task_id is not None:
            await repo.keep_estimate(rt.pool, req.task_id, req.task_type, result.estimates)
        return result

    async def price_usage(req: PriceUsage) -> Price:
        return price(prices.book, req)

    async def tiers(req: CompareTiers) -> TierComparison:
        return compare_tiers(prices.book, req)

    async def announce_change() -> None:
        await reload()
        await rt.broker.publish(b"", subjects.cost_prices_changed)

    async def set_price(req: SetPrice) -> PriceEntry:
        async with unit_of_work(rt.pool) as conn:
            entry = await repo.set_override(conn, req)
        await announce_change()
        log.info("price override set", model=req.model, provider=req.provider, actor=req.actor)
        return entry

    async def remove_price(req: RemovePrice) -> PriceList:
        async with unit_of_work(rt.pool) as conn:
            if not await repo.remove_override(conn, req.provider, req.model, req.actor):
                raise RoutewiseError(f"there is no price override for {req.provider}/{req.model}", code="not_found")
        await announce_change()
        log.info("price override removed", model=req.model, provider=req.provider, actor=req.actor)
        return PriceList(prices=await repo.list_override_entries(rt.pool))

    async def list_prices(req: ListPrices) -> PriceList:
        if not req.models:
            return PriceList(prices=await repo.list_override_entries(rt.pool))
        return PriceList(prices=[price_entry(prices.book.resolve(ref)) for ref in req.models])

    async def estimate_accuracy(req: GetEstimateAccuracy) -> EstimateAccuracy:
        return EstimateAccuracy(rows=await repo.accuracy(rt.pool, req.model, req.task_type))

    @router.subscriber(subjects.cost_prices_changed, title=f"{NAME}:{subjects.cost_prices_changed}")
    async def on_prices_changed() -> None:
        await reload()

    async def on_cost_recorded(conn: Connection, event: CostRecorded) -> None:
        try:
            model = prices.book.resolve(event.model).id  # learn under the same id estimates use
        except RoutewiseError:
            model = event.model
        if not event.success:
            return  # a failed call's output says nothing about the model's answers
        await repo.learn_output(conn, event.task_type, model, event.output_tokens)
        await repo.record_error(
            conn,
            event_id=event.event_id,
            task_id=event.task_id,
            model=model,
            output_tokens=event.output_tokens,
            cost_usd=event.cost_usd,
            at=event.occurred_at,
        )

    reply(router, subjects.cost_estimate, NAME, EstimateCost, estimate)
    reply(router, subjects.cost_price, NAME, PriceUsage, price_usage)
    reply(router, subjects.cost_compare_tiers, NAME, CompareTiers, tiers)
    reply(router, subjects.cost_prices_set, NAME, SetPrice, set_price)
    reply(router, subjects.cost_prices_remove, NAME, RemovePrice, remove_price)
    reply(router, subjects.cost_prices_list, NAME, ListPrices, list_prices)
    reply(router, subjects.cost_accuracy, NAME, GetEstimateAccuracy, estimate_accuracy)
    rt.consume_once(router, subjects.cost_recorded, CostRecorded, on_cost_recorded)
    rt.on_startup(started)


SPEC = ServiceSpec(name=NAME, migrations=Path(__file__).parent / "migrations", register=register)
