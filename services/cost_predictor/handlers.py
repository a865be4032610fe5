"""cost-predictor's service layer: estimates, prices and overrides, tier comparison, accuracy, the
models registered at run time and the live catalog it publishes; it learns output tokens and
estimate errors from CostRecorded.

Plain functions: each takes its event or request and the service's dependencies; none knows
NATS. ``app.py`` maps subjects to them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import CollectorRegistry, Counter

from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
from routewise.contracts.catalog import (
    MAX_REGISTERED,
    Catalog,
    ListModels,
    ModelEntry,
    ModelList,
    PublishedCatalog,
    RegisterModel,
    RemoveModel,
    default_catalog,
)
from routewise.contracts.cost import (
    AdjustCost,
    BudgetBasis,
    CompareTiers,
    CostAdjustment,
    CostAdjustmentList,
    CostEstimate,
    EstimateAccuracy,
    EstimateCost,
    GetEstimateAccuracy,
    ListCostAdjustments,
    ListPrices,
    OutputProfiles,
    Price,
    PriceEntry,
    PriceList,
    PriceUsage,
    RemovePrice,
    SetPrice,
    TierComparison,
)
from routewise.contracts.errors import RemoteError, RoutewiseError
from routewise.contracts.events import CostAdjusted, CostRecorded, CostReported, ModelSelected
from routewise.contracts.vocabulary import ErrorCode
from routewise.estimates import Estimator, price
from routewise.runtime.bus import still_working, stored_at
from routewise.runtime.catalog import seed_catalog
from routewise.runtime.service import Deps, Runtime, UnitOfWork
from routewise.runtime.settings import Settings
from routewise.services.cost_predictor import repository as repo
from routewise.services.cost_predictor import trust
from routewise.services.cost_predictor.domain import compare_tiers, override_entry, price_entry, unpriced_models
from routewise.services.cost_predictor.ports import (
    BUDGET_TIMEOUT_S,
    CatalogStore,
    CostBus,
    KvCatalogStore,
    KvProfileStore,
    MemoryCatalogStore,
    MemoryProfileStore,
    NatsCostBus,
    ProfileStore,
)
from routewise.services.cost_predictor.pricing import PriceBook

RELOAD_EVERY_S = 30.0
"""Overrides and registrations changed on a replica that could not announce them are picked up
(and a catalog it could not publish is published) this often."""
log = structlog.get_logger(__name__)


@dataclass(kw_only=True)
class CostDeps(Deps):
    catalog: Catalog
    """The live catalog: the seed with the registered models."""
    book: PriceBook
    """The current price book; rebuilt whenever the overrides or the registered models change
    (here or on a replica)."""
    bus: CostBus
    seed: Catalog = field(default_factory=default_catalog)
    """The shipped catalog file (or ``ROUTEWISE_CATALOG_PATH``'s)."""
    store: CatalogStore = field(default_factory=MemoryCatalogStore)
    revision: int = 0
    """The catalog revision this replica has loaded (0: none yet)."""
    registered: dict[str, repo.Registered] = field(default_factory=dict)
    unpriced: dict[str, str] = field(default_factory=dict)
    """Catalog models without a price (not routable), and why."""
    loading: asyncio.Lock = field(default_factory=asyncio.Lock)
    profiles: ProfileStore = field(default_factory=MemoryProfileStore)
    profiles_to_publish: set[str] = field(default_factory=set)
    """Task types whose output profiles this replica changed since it last published them."""
    count_refusal: Callable[[str], None] = lambda reason: None
    """Told of each refused reported cost, with its reason (a Prometheus counter)."""

    @property
    def estimator(self) -> Estimator:
        return Estimator(self.book)

    def published(self) -> PublishedCatalog:
        return PublishedCatalog(
            revision=max(self.revision, 1),
            models=self.catalog.models,
            unpriced=self.unpriced,
            overrides=[override_entry(o) for o in self.book.overrides.values()],
        )


async def build(rt: Runtime) -> CostDeps:
    """Load the registered models and the overrides before any request, and publish the live
    catalog. A catalog model without a price does not stop the service: it is not routable
    (the selector skips it; ``routewise models list`` says why) until it is priced."""
    seed = seed_catalog(rt.settings)
    deps = CostDeps(
        **rt.base_deps(),
        seed=seed,
        catalog=seed,
        book=PriceBook(seed),
        bus=NatsCostBus(rt.broker, rt.subjects, BUDGET_TIMEOUT_S),
        store=await KvCatalogStore.open(rt.broker, rt.subjects.catalog_bucket),
        profiles=await KvProfileStore.open(rt.broker, rt.subjects.profiles_bucket),
        count_refusal=refusal_counter(rt.registry),
    )
    await load_catalog(deps)
    await publish(deps, same_revision=True)  # this replica's seed file may be new
    await publish_profiles(deps, everything=True)
    return deps


def refusal_counter(registry: CollectorRegistry) -> Callable[[str], None]:
    counter = Counter(
        "routewise_costs_refused_total",
        "Reported costs refused (CostRefused), by reason",
        ["reason"],
        registry=registry,
    )
    return lambda reason: counter.labels(reason).inc()


# --- the live catalog -----------------------------------------------------------------------


async def load_catalog(deps: CostDeps, at_least: int | None = None) -> None:
    """Rebuild the catalog (the seed with the registered models) and the price book from the
    stored registrations and overrides, and find the models without a price (``at_least``: only
    when this replica has an older revision than that)."""
    async with deps.loading:
        if at_least is not None and deps.revision >= at_least:
            return  # loaded meanwhile, for another request
        async with deps.snapshot() as conn:
            state = await repo.catalog_state(conn)
        catalog = deps.seed.with_registered([r.model for r in state.registered])
        book = PriceBook(catalog, state.overrides)
        unpriced = unpriced_models(book)
        for model, reason in unpriced.items():
            if deps.unpriced.get(model) != reason:
                log.warning("catalog model not routable: it has no price", model=model, reason=reason)
        deps.catalog, deps.book, deps.unpriced = catalog, book, unpriced
        deps.registered = {r.model.id: r for r in state.registered}
        deps.revision = state.revision


async def catch_up(deps: CostDeps, revision: int | None) -> None:
    """Load the catalog when the asker knows a newer revision than this replica (a model was
    registered, or priced, a moment ago on another replica)."""
    if revision is not None and revision > deps.revision:
        await load_catalog(deps, at_least=revision)


async def publish(deps: CostDeps, *, same_revision: bool = False) -> None:
    """Publish the live catalog to every service. A bus that does not take it is logged: the
    change is stored, and the reload job publishes it again within ``RELOAD_EVERY_S``."""
    try:
        await deps.store.publish(deps.published(), same_revision=same_revision)
    except Exception as exc:
        log.warning("the live catalog was not published; it is published again later", error=repr(exc)[:500])


PROFILES_EVERY_S = 0.5
"""How soon the output tokens learnt from new costs reach the selector's estimates."""


async def publish_profiles(deps: CostDeps, *, everything: bool = False) -> None:
    """Publish the output profiles of the task types this replica learnt from since the last time
    (``everything``: of every task type, at start-up), read from the database, so the newest
    learning of any replica is what goes out. What could not be published goes out next time."""
    task_types, deps.profiles_to_publish = deps.profiles_to_publish, set()
    if not (task_types or everything):
        return
    try:
        learnt = await repo.task_type_profiles(deps.pool, None if everything else sorted(task_types))
    except Exception as exc:
        deps.profiles_to_publish |= task_types
        log.warning("output profiles not read; published later", error=repr(exc)[:300])
        return
    for task_type, models in learnt.items():
        try:
            await deps.profiles.publish(OutputProfiles(task_type=task_type, models=models))
        except Exception as exc:  # one task type's failure does not hold back the others
            deps.profiles_to_publish.add(task_type)
            log.warning("output profiles not published; published later", task_type=task_type, error=repr(exc)[:300])


# --- jobs and notices -----------------------------------------------------------------------


async def reload_prices(deps: CostDeps) -> None:
    """Rebuild the catalog and the price book from the stored registrations and overrides, and
    publish the catalog when the bucket is behind (a replica that changed it may have stopped
    before it could)."""
    await load_catalog(deps)
    await publish(deps)


# --- events ---------------------------------------------------------------------------------


async def check_reported_cost(event: CostReported, deps: CostDeps) -> None:
    """The one door of an application's costs. Priced with the price book: an implausible cost is
    refused at once. A plausible one (or self-priced, when the deployment accepts what it would
    refuse) must also be a call of its task's decision — a task decided in the report's org, a
    model of that decision — waiting for the decision when the report overtook it
    (``decision_of``). It is published as CostRecorded, or as CostRefused with the reason, through
    the outbox, in one transaction with this event's inbox claim (taken after the wait: no
    transaction is held while it waits)."""
    expected, why_unpriced = trust.expected_cost(deps.book, event)
    verdict = trust.judge(event.cost_usd, expected, plausibility(deps.settings), failed=not event.success)
    if verdict.accepted:
        decision = await decision_of(event, deps)
        wait = deps.settings.cost_report_wait
        verdict = trust.against_decision(event, decision, model_names(deps, event.model), wait) or verdict
    async with deps.transaction() as uow:
        if not await deps.claim(uow.conn, event):
            return  # applied before (a redelivery): its verdict is out already
        if verdict.accepted:
            cost = trust.recorded(event, self_priced=verdict.self_priced)
            await uow.publish(deps.subjects.event(cost), cost)
            if verdict.self_priced:
                log.info("reported cost accepted as self-priced", model=event.model, reason=verdict.reason)
            return
        refusal = trust.refused(event, verdict, expected, why_unpriced)
        await uow.publish(deps.subjects.event(refusal), refusal)
        uow.after_commit(lambda: deps.count_refusal(refusal.reason.value))
    log.warning(
        "reported cost refused",
        reason=refusal.reason.value,
        model=event.model,
        reported_usd=str(event.cost_usd),
        expected_usd=None if expected is None else str(expected),
    )


REPORT_WAIT_FIRST_S, REPORT_WAIT_MAX_S = 0.1, 2.0
"""How often a report waiting for its decision looks again: from a tenth of a second, doubling, up to two."""
REPORT_WORKERS = 16
"""Reports one replica checks at once: one waiting for its decision does not hold up the others."""


async def decision_of(event: CostReported, deps: CostDeps) -> trust.Decision | None:
    """The decision of the report's task, as this service learnt it (``learn_decision``). A report
    may come before it (the application had the decision from the bus before cost-predictor
    applied it; a replica is behind): it waits, looking again, until ``cost_report_wait`` after
    the report reached the bus (the same moment on every redelivery), keeping the message in hand
    meanwhile. None: no decision came."""
    deadline = stored_at() + timedelta(seconds=deps.settings.cost_report_wait)
    wait = REPORT_WAIT_FIRST_S
    while True:
        found = await repo.decision(deps.pool, event.task_id)
        left = (deadline - datetime.now(UTC)).total_seconds()
        if found is not None or left <= 0:
            return found
        await still_working()
        await asyncio.sleep(min(wait, left))
        wait = min(wait * 2, REPORT_WAIT_MAX_S)


def model_names(deps: CostDeps, model: str) -> set[str]:
    """The reported model's names: as reported, and the catalog id it resolves to."""
    try:
        return {model, deps.book.resolve(model).id}
    except RoutewiseError:
        return {model}


async def learn_decision(event: ModelSelected, uow: UnitOfWork, deps: CostDeps) -> None:
    """Remember the task's decision (the costs reported for it are checked against it) and what its
    estimate said of each candidate (the selector estimates locally; its costs are compared with it)."""
    await repo.keep_decision(uow.conn, event)
    await repo.keep_estimate(uow.conn, event.task_id, event.task_type, repo.decided_predictions(event))


def plausibility(settings: Settings) -> trust.Plausibility:
    return trust.Plausibility(
        ratio=settings.cost_plausibility_ratio,
        floor_usd=settings.cost_plausibility_floor,
        allow_self_priced=settings.allow_self_priced,
    )


async def learn_cost(event: CostRecorded, uow: UnitOfWork, deps: CostDeps) -> None:
    """Remember the cost (what an adjustment is checked against), fold a successful call's output
    tokens into its (task type, model) profile, and compare it with the task's estimate."""
    if event.cached:
        return  # a cache hit made no call: nothing to adjust or learn
    try:
        model = deps.book.resolve(event.model).id  # learn under the same id estimates use
    except RoutewiseError:
        model = event.model
    await repo.keep_recorded(uow.conn, event, model)
    if not event.success:
        return  # a failed call's output says nothing about the model's answers
    await repo.learn_output(uow.conn, event.task_type, model, event.output_tokens)
    uow.after_commit(lambda: deps.profiles_to_publish.add(event.task_type))
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
    await catch_up(deps, req.catalog_revision)
    estimator = deps.estimator
    models = estimator.resolve_all(req.models)
    profiles = await repo.profiles(deps.pool, req.task_type, [m.id for m in models])
    result = estimator.estimate(req, models, profiles, await budget_basis(req, deps))
    if req.task_id is not None:
        await repo.keep_estimate(deps.pool, req.task_id, req.task_type, repo.predictions_of(result.estimates))
    return result


async def price_usage(req: PriceUsage, deps: CostDeps) -> Price:
    return price(deps.book, req)


async def tiers(req: CompareTiers, deps: CostDeps) -> TierComparison:
    return compare_tiers(deps.book, req, deps.unpriced)


async def _announce_change(deps: CostDeps) -> None:
    await reload_prices(deps)
    await deps.bus.announce_prices_changed()


async def set_price(req: SetPrice, deps: CostDeps) -> PriceEntry:
    async with deps.transaction() as uow:
        entry = await repo.set_override(uow.conn, req)
        await repo.next_revision(uow.conn)
    await _announce_change(deps)
    log.info("price override set", model=req.model, provider=req.provider, actor=req.actor)
    return entry


async def remove_price(req: RemovePrice, deps: CostDeps) -> PriceList:
    async with deps.transaction() as uow:
        if not await repo.remove_override(uow.conn, req.provider, req.model, req.actor):
            raise RoutewiseError(f"there is no price override for {req.provider}/{req.model}", code=ErrorCode.not_found)
        await repo.next_revision(uow.conn)
    await _announce_change(deps)
    log.info("price override removed", model=req.model, provider=req.provider, actor=req.actor)
    return PriceList(prices=await repo.list_override_entries(deps.pool))


async def list_prices(req: ListPrices, deps: CostDeps) -> PriceList:
    if not req.models:
        return PriceList(prices=await repo.list_override_entries(deps.pool))
    return PriceList(prices=[price_entry(deps.book.resolve(ref)) for ref in req.models])


async def estimate_accuracy(req: GetEstimateAccuracy, deps: CostDeps) -> EstimateAccuracy:
    return EstimateAccuracy(rows=await repo.accuracy(deps.pool, req.model, req.task_type))


# --- adjustments of recorded costs ----------------------------------------------------------


def _one_cost(req: AdjustCost, costs: list[repo.RecordedCost]) -> repo.RecordedCost:
    """The recorded cost an adjustment is about: a clear error when there is none, or several."""
    if req.scope is not None:
        costs = [c for c in costs if req.scope.contains(c.scope)]
    if req.cost_event_id is not None:
        costs = [c for c in costs if c.event_id == req.cost_event_id]
    call = f"task {req.task_id}, attempt {req.attempt}"
    if not costs:
        event = f" (cost event {req.cost_event_id})" if req.cost_event_id else ""
        raise RoutewiseError(
            f"no cost is recorded for {call}{event}: nothing to adjust (check the task id and --attempt; a cost"
            " takes a moment to be recorded, and a gateway cache hit cost nothing)",
            code=ErrorCode.not_found,
            details={"task_id": str(req.task_id), "attempt": req.attempt},
        )
    if len(costs) > 1:
        ids = [str(c.event_id) for c in costs]
        raise RoutewiseError(
            f"{call} has {len(costs)} recorded costs; say which with cost_event_id (--event): {', '.join(ids)}",
            code=ErrorCode.invalid_request,
            details={"cost_event_ids": ids},
        )
    return costs[0]


def _view(event: CostAdjusted) -> CostAdjustment:
    return CostAdjustment(
        adjustment_id=event.event_id,
        at=event.occurred_at,
        **event.model_dump(
            include={
                "task_id",
                "attempt",
                "cost_event_id",
                "scope",
                "model",
                "provider",
                "sequence",
                "previous_cost_usd",
                "cost_usd",
                "delta_usd",
                "void",
                "self_priced",
                "reason",
                "actor",
            }
        ),
    )


async def adjust_cost(req: AdjustCost, deps: CostDeps) -> CostAdjustment:
    """Correct or void one recorded cost: audited, and published as CostAdjusted (through the
    outbox, in the same transaction) for budgets, metrics and performance statistics to apply once.
    Adjustments of one cost are numbered: consumers apply them in that order."""
    async with deps.transaction() as uow:
        cost = _one_cost(req, await repo.recorded_costs(uow.conn, req.task_id, req.attempt))
        try:
            change = trust.adjustment(cost.cost_usd, req.cost_usd, void=req.void)
        except ValueError as exc:
            raise RoutewiseError(str(exc), code=ErrorCode.invalid_request) from None
        event = CostAdjusted(
            occurred_at=deps.clock(),
            task_id=cost.task_id,
            attempt=cost.attempt,
            scope=cost.scope,
            task_type=cost.task_type,
            model=cost.model,
            provider=cost.provider,
            cost_event_id=cost.event_id,
            recorded_at=cost.occurred_at,
            sequence=cost.adjustments + 1,
            previous_cost_usd=change.previous,
            cost_usd=change.cost,
            delta_usd=change.delta,
            void=change.void,
            self_priced=cost.self_priced,
            reason=req.reason,
            actor=req.actor,
        )
        await repo.save_adjustment(uow.conn, event)
        await uow.publish(deps.subjects.event(event), event)
    log.info(
        "recorded cost adjusted",
        task_id=str(event.task_id),
        attempt=event.attempt,
        previous_usd=str(event.previous_cost_usd),
        cost_usd=str(event.cost_usd),
        void=event.void,
        actor=event.actor,
    )
    return _view(event)


async def list_adjustments(req: ListCostAdjustments, deps: CostDeps) -> CostAdjustmentList:
    return CostAdjustmentList(adjustments=await repo.adjustments(deps.pool, req.task_id, req.scope, req.limit))


# --- models registered at run time ----------------------------------------------------------


def model_entry(deps: CostDeps, model_id: str) -> ModelEntry:
    """A model of the live catalog as ``routewise models list`` shows it."""
    model = deps.catalog.require(model_id)
    registered = deps.registered.get(model_id)
    reason = deps.unpriced.get(model_id)
    return ModelEntry(
        model=model,
        source="registered" if registered else "shipped",
        replaces_shipped=registered is not None and deps.seed.get(model_id) is not None,
        routable=reason is None,
        reason=reason,
        price=None if reason else price_entry(deps.book.resolve(model_id)),
        registered_by=registered.by if registered else None,
        registered_at=registered.at if registered else None,
    )


async def register_model(req: RegisterModel, deps: CostDeps) -> ModelEntry:
    """Add (or replace) a catalog model with its price, audited; every replica of every service
    routes with it as soon as the catalog is published. Without a price of its own the model must
    have one already (genai-prices', or an override)."""
    entry = req.entry()
    if not req.priced:
        registered = [r.model for r in deps.registered.values() if r.model.id != entry.id]
        trial = PriceBook(deps.seed.with_registered([*registered, entry]), list(deps.book.overrides.values()))
        problem = unpriced_models(trial).get(entry.id)
        if problem is not None:
            raise RoutewiseError(
                f"{entry.id}: genai-prices has no price for it and this deployment has none: register it with "
                "its price (input_mtok and output_mtok, USD per million tokens)",
                code=ErrorCode.unknown_price,
                details={"model": entry.id, "reason": problem},
            )
    async with deps.transaction() as uow:
        if entry.id not in deps.registered and await repo.count_registered(uow.conn) >= MAX_REGISTERED:
            raise RoutewiseError(
                f"{MAX_REGISTERED} models are registered already; remove one first", code=ErrorCode.invalid_request
            )
        await repo.register_model(uow.conn, entry, req.actor)
        if req.priced:
            assert req.input_mtok is not None and req.output_mtok is not None
            price_of = SetPrice(
                model=entry.id,
                provider=entry.provider,
                input_mtok=req.input_mtok,
                output_mtok=req.output_mtok,
                cache_read_mtok=req.cache_read_mtok,
                cache_write_mtok=req.cache_write_mtok,
                actor=req.actor,
            )
            await repo.set_override(uow.conn, price_of)
        await repo.next_revision(uow.conn)
    await _announce_change(deps)
    log.info("model registered", model=entry.id, provider=entry.provider, tier=entry.tier.value, actor=req.actor)
    return model_entry(deps, entry.id)


async def remove_model(req: RemoveModel, deps: CostDeps) -> ModelList:
    """Remove a registered model, audited (a shipped model of the same id comes back). Its price
    override stays: a cost recorded later for a call already routed to it is still priced."""
    async with deps.transaction() as uow:
        if not await repo.remove_model(uow.conn, req.id, req.actor):
            shipped = (
                " (a shipped model: leave it out of the routing policies instead)" if deps.seed.get(req.id) else ""
            )
            raise RoutewiseError(f"{req.id} is not a registered model{shipped}", code=ErrorCode.not_found)
        await repo.next_revision(uow.conn)
    await _announce_change(deps)
    log.info("model removed", model=req.id, actor=req.actor)
    return await list_models(ListModels(), deps)


async def list_models(req: ListModels, deps: CostDeps) -> ModelList:
    """Every model of the live catalog: where it comes from, whether it is routable (and why not),
    its price. Read as stored now (another replica may just have changed it)."""
    await catch_up(deps, await repo.catalog_revision(deps.pool))
    return ModelList(revision=deps.revision, models=[model_entry(deps, m.id) for m in deps.catalog.models])
