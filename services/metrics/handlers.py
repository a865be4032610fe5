"""metrics' service layer: one ledger row per task from its arrival, decision, costs and feedback;
the baselines priced at the tasks' real tokens; the summary and the report.

Plain functions: each takes its event or request and the service's dependencies; none knows
NATS. ``app.py`` maps subjects to them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from decimal import Decimal

import structlog
from pydantic import ValidationError

from routewise.contracts.cost import PriceUsage
from routewise.contracts.errors import RemoteError
from routewise.contracts.events import (
    CostAdjusted,
    CostRecorded,
    FeedbackRecorded,
    ModelSelected,
    TaskArrived,
    TaskRejected,
)
from routewise.contracts.metrics import GetMetricsReport, GetMetricsSummary, MetricsReport, MetricsSummary
from routewise.contracts.vocabulary import is_permanent
from routewise.runtime.catalog import LiveCatalog
from routewise.runtime.service import Deps, Runtime, UnitOfWork
from routewise.services.metrics import repository as repo
from routewise.services.metrics.meters import Meters
from routewise.services.metrics.ports import LocalPricer, Pricer
from routewise.services.metrics.report import report as ledger_report

log = structlog.get_logger(__name__)

PRICE_EVERY_S = 1.0
"""The baseline-pricing job runs this often, and at once when an applied event asks for it."""
PRICE_BATCH = 200


@dataclass(kw_only=True)
class MetricsDeps(Deps):
    meters: Meters
    pricer: Pricer
    to_price: asyncio.Event = field(default_factory=asyncio.Event)
    """Set after an applied event may have left a baseline to price: wakes ``price_baselines``."""
    live_catalog: LiveCatalog | None = None
    """cost-predictor's published catalog: the models costs are labelled by."""


async def build(rt: Runtime) -> MetricsDeps:
    live = await LiveCatalog.open(rt.broker, rt.settings)
    meters = Meters(rt.registry, live.view.catalog)
    pricer = LocalPricer(live.view)
    live.on_change(lambda view: meters.use_catalog(view.catalog))
    live.on_change(pricer.use)
    return MetricsDeps(**rt.base_deps(), meters=meters, pricer=pricer, live_catalog=live)


# --- events ---------------------------------------------------------------------------------


async def task_arrived(event: TaskArrived, uow: UnitOfWork, deps: MetricsDeps) -> None:
    await repo.record_arrival(uow.conn, event)


async def model_selected(event: ModelSelected, uow: UnitOfWork, deps: MetricsDeps) -> None:
    await repo.record_selection(uow.conn, event)
    uow.after_commit(lambda: deps.meters.selected(event))
    uow.after_commit(deps.to_price.set)  # a new baseline, or a new one for the task's tokens


async def task_rejected(event: TaskRejected, uow: UnitOfWork, deps: MetricsDeps) -> None:
    await repo.record_rejection(uow.conn, event)
    uow.after_commit(lambda: deps.meters.rejected(event))


async def cost_recorded(event: CostRecorded, uow: UnitOfWork, deps: MetricsDeps) -> None:
    await repo.record_cost(uow.conn, event)
    uow.after_commit(lambda: deps.meters.cost(event))
    uow.after_commit(deps.to_price.set)  # the task's tokens changed: its baseline needs a new price


async def cost_adjusted(event: CostAdjusted, uow: UnitOfWork, deps: MetricsDeps) -> None:
    """A corrected or voided cost: the task's actual cost (and savings, per-model figures) follow it."""
    await repo.adjust_cost(uow.conn, event)
    uow.after_commit(lambda: deps.meters.adjusted(event))


async def feedback_recorded(event: FeedbackRecorded, uow: UnitOfWork, deps: MetricsDeps) -> None:
    await repo.record_feedback(uow.conn, event)


# --- requests -------------------------------------------------------------------------------


async def summary(req: GetMetricsSummary, deps: MetricsDeps) -> MetricsSummary:
    totals = await repo.totals(deps.pool, req.org_id)
    return MetricsSummary(
        tasks=totals.tasks,
        selected=totals.selected,
        rejected=totals.rejected,
        costs_recorded=totals.costs_recorded,
        estimated_cost_usd=totals.estimated_usd,
        baseline_cost_usd=totals.baseline_usd,
        actual_cost_usd=totals.actual_usd,
    )


async def report(req: GetMetricsReport, deps: MetricsDeps) -> MetricsReport:
    async with deps.snapshot() as conn:
        return await ledger_report(conn, req)  # every figure from one snapshot of the ledger


# --- jobs -----------------------------------------------------------------------------------


async def _price(task: repo.Unpriced, deps: MetricsDeps) -> tuple[Decimal | None, str | None]:
    """(the baseline's cost, None), or (None, why it cannot be priced). Raises when the pricer could
    not answer (a refusal that is not permanent): the task is priced on a later round."""
    try:
        usage = PriceUsage(
            model=task.baseline_model,
            input_tokens=task.input_tokens,
            output_tokens=task.output_tokens,
            cached_input_tokens=min(task.cached_input_tokens, task.input_tokens),
        )
        return (await deps.pricer.price(usage)).cost_usd, None
    except ValidationError as exc:
        return None, f"invalid_request: {exc.errors()[0]['msg']}"
    except RemoteError as exc:
        if not is_permanent(exc.code):
            raise  # try again on the next round
        return None, f"{exc.code}: {exc.message}"


async def price_batch(deps: MetricsDeps, limit: int = PRICE_BATCH) -> int:
    """Price the baseline model at the real token counts of up to ``limit`` tasks whose tokens
    changed since it was last priced (the published catalog's price book); a row is only updated if its
    tokens did not change meanwhile. Returns how many tasks it priced."""
    tasks = await repo.to_price(deps.pool, limit)
    await repo.save_baseline_prices(deps.pool, [(task, *await _price(task, deps)) for task in tasks])
    return len(tasks)


async def price_baselines(deps: MetricsDeps) -> None:
    """Every baseline left to price, a batch at a time. Runs beside the consumers, so an event
    never waits on pricing."""
    while await price_batch(deps) >= PRICE_BATCH:
        pass
