"""cost-predictor's service layer: estimates, prices and overrides, tier comparison, accuracy; it
learns output tokens and estimate errors from CostRecorded.

Plain functions: each takes its event or request and the service's dependencies; none knows
NATS. ``app.py`` maps subjects to them.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
from routewise.contracts.catalog import Catalog, default_catalog
from routewise.contracts.cost import (
    BudgetBasis,
    CompareTiers,
    CostEstimate,
    EstimateAccuracy,
    EstimateCost,
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
from routewise.contracts.errors import RemoteError, RoutewiseError
from routewise.contracts.events import CostRecorded
from routewise.contracts.vocabulary import ErrorCode
from routewise.runtime.service import Deps, Runtime, UnitOfWork
from routewise.services.cost_predictor import repository as repo
from routewise.services.cost_predictor.domain import Estimator, check_catalog_priced, compare_tiers, price, price_entry
from routewise.services.cost_predictor.ports import BUDGET_TIMEOUT_S, CostBus, NatsCostBus
from routewise.services.cost_predictor.pricing import PriceBook

RELOAD_EVERY_S = 30.0
"""Overrides changed on a replica that could not announce it are picked up this often."""
log = structlog.get_logger(__name__)


@dataclass(kw_only=True)
class CostDeps(Deps):
    catalog: Catalog
    book: PriceBook
    """The current price book; rebuilt whenever the overrides change (here or on a replica)."""
    bus: CostBus

    @property
    def estimator(self) -> Estimator:
        return Estimator(self.book)


async def build(rt: Runtime) -> CostDeps:
    """Refuse to start with a catalog model that has no price; load the overrides before any request."""
    catalog = default_catalog()
    book = PriceBook(catalog)
    check_catalog_priced(book)
    deps = CostDeps(
        **rt.base_deps(), catalog=catalog, book=book, bus=NatsCostBus(rt.broker, rt.subjects, BUDGET_TIMEOUT_S)
    )
    await reload_prices(deps)
    return deps


# --- jobs and notices -----------------------------------------------------------------------


async def reload_prices(deps: CostDeps) -> None:
    """Rebuild the price book from the catalog and the stored overrides."""
    deps.book = PriceBook(deps.catalog, await repo.load_overrides(deps.pool))


# --- events ---------------------------------------------------------------------------------


async def learn_cost(event: CostRecorded, uow: UnitOfWork, deps: CostDeps) -> None:
    """Fold a successful call's output tokens into its (task type, model) profile, and compare it
    with the task's estimate."""
    if not event.success or event.cached:
        return  # a failed call's output says nothing about the model's answers; a cache hit made no call
    try:
        model = deps.book.resolve(event.model).id  # learn under the same id estimates use
    except RoutewiseError:
        model = event.model
    await repo.learn_output(uow.conn, event.task_type, model, event.output_tokens)
    await repo.record_error(
        uow.conn,
        event_id=event.event_id,
        task_id=event.task_id,
        model=model,
        output_tokens=event.output_tokens,
        cost_usd=event.cost_usd,
        at=event.occurred_at,
    )


# --- requests -------------------------------------------------------------------------------


def _basis(status: BudgetStatus) -> BudgetBasis | None:
    """What remains of the tightest budget of a status; None without a limit."""
    if status.remaining_usd is None or not status.limit_usd:
        return None
    tightest = min(status.budgets, key=lambda b: b.remaining_usd, default=None)
    return BudgetBasis(
        scope_type=tightest.scope_type if tightest else status.scope_type,
        scope_id=tightest.scope_id if tightest else status.scope_id,
        remaining_usd=status.remaining_usd,
        percent_remaining=round(float(status.remaining_usd / status.limit_usd * 100), 2),
    )


async def budget_basis(req: EstimateCost, deps: CostDeps) -> BudgetBasis | None:
    """What remains of the tightest budget on the request's scope chain, if budget-enforcer knows."""
    if req.scope is None:
        return None
    try:
        status = await deps.bus.budget_status(GetBudgetStatus(scope=req.scope))
    except RemoteError as exc:
        log.info("no budget impact: budget-enforcer did not answer", code=exc.code)
        return None
    return _basis(status)


async def estimate(req: EstimateCost, deps: CostDeps) -> CostEstimate:
    estimator = deps.estimator
    models = estimator.resolve_all(req.models)
    profiles = await repo.profiles(deps.pool, req.task_type, [m.id for m in models])
    result = estimator.estimate(req, models, profiles, await budget_basis(req, deps))
    if req.task_id is not None:
        await repo.keep_estimate(deps.pool, req.task_id, req.task_type, result.estimates)
    return result


async def price_usage(req: PriceUsage, deps: CostDeps) -> Price:
    return price(deps.book, req)


async def tiers(req: CompareTiers, deps: CostDeps) -> TierComparison:
    return compare_tiers(deps.book, req)


async def _announce_change(deps: CostDeps) -> None:
    await reload_prices(deps)
    await deps.bus.announce_prices_changed()


async def set_price(req: SetPrice, deps: CostDeps) -> PriceEntry:
    async with deps.transaction() as uow:
        entry = await repo.set_override(uow.conn, req)
    await _announce_change(deps)
    log.info("price override set", model=req.model, provider=req.provider, actor=req.actor)
    return entry


async def remove_price(req: RemovePrice, deps: CostDeps) -> PriceList:
    async with deps.transaction() as uow:
        if not await repo.remove_override(uow.conn, req.provider, req.model, req.actor):
            raise RoutewiseError(f"there is no price override for {req.provider}/{req.model}", code=ErrorCode.not_found)
    await _announce_change(deps)
    log.info("price override removed", model=req.model, provider=req.provider, actor=req.actor)
    return PriceList(prices=await repo.list_override_entries(deps.pool))


async def list_prices(req: ListPrices, deps: CostDeps) -> PriceList:
    if not req.models:
        return PriceList(prices=await repo.list_override_entries(deps.pool))
    return PriceList(prices=[price_entry(deps.book.resolve(ref)) for ref in req.models])


async def estimate_accuracy(req: GetEstimateAccuracy, deps: CostDeps) -> EstimateAccuracy:
    return EstimateAccuracy(rows=await repo.accuracy(deps.pool, req.model, req.task_type))
