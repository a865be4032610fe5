"""metrics' bus adapters: one ledger row per task from its arrival, decision, costs and feedback."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import structlog
from faststream.nats import NatsRouter
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import ValidationError

from services.metrics.report import report
from shared.bus import reply, request
from shared.catalog import Catalog, default_catalog
from shared.db import Connection
from shared.errors import RemoteError
from shared.events import CostRecorded, FeedbackRecorded, ModelSelected, Scope, TaskArrived, TaskRejected
from shared.requests import GetMetricsReport, GetMetricsSummary, MetricsReport, MetricsSummary, Price, PriceUsage
from shared.service import Runtime, ServiceSpec

NAME = "metrics"
log = structlog.get_logger(__name__)
PRICE_EVERY_S = 1.0

# cost.price errors that mean "the baseline cannot be priced", not "try again later"
_UNPRICEABLE = {"unknown_price", "ambiguous_model", "invalid_request"}


TO_PRICE = """
SELECT task_id, baseline_model, input_tokens, output_tokens, coalesce(cached_input_tokens, 0) AS cached
FROM task_ledger
WHERE baseline_model IS NOT NULL AND input_tokens IS NOT NULL
  AND baseline_priced_tokens IS DISTINCT FROM
      ARRAY[input_tokens, output_tokens, coalesce(cached_input_tokens, 0)]::bigint[]
ORDER BY cost_recorded_at LIMIT $1"""
"""Rows whose baseline is not priced at their current tokens (matches the task_ledger_to_price index)."""

_SCOPE = "task_id, org_id, team_id, user_id, workspace_id"
"""The ledger's identity columns, the first five parameters of every upsert (see ``_scope``)."""
_SCOPE_UPDATE = (
    "team_id = coalesce(EXCLUDED.team_id, t.team_id), user_id = coalesce(EXCLUDED.user_id, t.user_id), "
    "workspace_id = coalesce(EXCLUDED.workspace_id, t.workspace_id)"
)


def _scope(task_id: UUID, scope: Scope) -> tuple[object, ...]:
    return (task_id, scope.org_id, scope.team_id, scope.user_id, scope.workspace_id)


class Meters:
    """Prometheus meters of routing outcomes, counted once per applied event (after its commit)."""

    def __init__(self, registry: CollectorRegistry, catalog: Catalog) -> None:
        self.decisions = Counter(
            "routewise_decisions_total", "Tasks given a model", ["strategy", "tier", "policy"], registry=registry
        )
        self.rejections = Counter("routewise_rejections_total", "Tasks rejected", ["reason"], registry=registry)
        self.estimated_cost = Counter(
            "routewise_estimated_cost_usd_total", "Estimated cost of the chosen models (USD)", registry=registry
        )
        self.baseline_cost = Counter(
            "routewise_baseline_cost_usd_total", "Estimated cost of the baselines (USD)", registry=registry
        )
        self.estimated_savings = Counter(
            "routewise_estimated_savings_usd_total", "Baseline estimate minus chosen estimate (USD)", registry=registry
        )
        self.actual_cost = Counter(
            "routewise_actual_cost_usd_total",
            "What the calls really cost (USD), by catalog model ('other' for a model outside the catalog)",
            ["model"],
            registry=registry,
        )
        self.catalog = {m.id for m in catalog.models}
        self.decision_latency = Histogram(
            "routewise_decision_latency_seconds",
            "Time the selector took to decide a task",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )

    def selected(self, event: ModelSelected) -> None:
        self.decisions.labels(event.strategy, event.tier.value, event.policy or "").inc()
        self.estimated_cost.inc(float(event.estimated_cost_usd))
        self.baseline_cost.inc(float(event.baseline_cost_usd))
        self.estimated_savings.inc(max(float(event.baseline_cost_usd - event.estimated_cost_usd), 0.0))
        self.decision_latency.observe(event.decision_latency_ms / 1000)

    def rejected(self, event: TaskRejected) -> None:
        self.rejections.labels(event.reason.value).inc()

    def cost(self, event: CostRecorded) -> None:
        # the model name is the application's; a label per name it invents would grow without bound
        model = event.model if event.model in self.catalog else "other"
        self.actual_cost.labels(model).inc(float(event.cost_usd))


def register(router: NatsRouter, rt: Runtime) -> None:
    subjects = rt.subjects
    meters = Meters(rt.registry, default_catalog())
    to_price = asyncio.Event()

    async def price_baselines(limit: int = 200) -> int:
        """Price the baseline model at the real token counts of every task whose tokens changed
        since it was last priced (cost-predictor, genai-prices). Runs beside the consumers, so an
        event never waits on cost-predictor; a row is only updated if its tokens did not change
        meanwhile. Returns how many rows it priced."""
        rows = await rt.pool.fetch(TO_PRICE, limit)
        for row in rows:
            tokens = [row["input_tokens"], row["output_tokens"], row["cached"]]
            cost: Decimal | None = None
            error: str | None = None
            try:
                usage = PriceUsage(
                    model=row["baseline_model"],
                    input_tokens=tokens[0],
                    output_tokens=tokens[1],
                    cached_input_tokens=min(tokens[2], tokens[0]),
                )
                price = await request(rt.broker, subjects.cost_price, usage, Price, timeout=rt.settings.request_timeout)
                cost = price.cost_usd
            except ValidationError as exc:
                error = f"invalid_request: {exc.errors()[0]['msg']}"
            except RemoteError as exc:
                if exc.code not in _UNPRICEABLE:
                    raise  # cost-predictor unavailable: try again on the next round
                error = f"{exc.code}: {exc.message}"
            await rt.pool.execute(
                """UPDATE task_ledger SET baseline_actual_cost_usd = $2, baseline_price_error = $3,
                       baseline_priced_tokens = $4::bigint[]
                   WHERE task_id = $1 AND baseline_model = $5 AND ARRAY[input_tokens, output_tokens,
                       coalesce(cached_input_tokens, 0)]::bigint[] = $4::bigint[]""",
                row["task_id"],
                cost,
                error,
                tokens,
                row["baseline_model"],
            )
        return len(rows)

    async def price_forever() -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(to_price.wait(), PRICE_EVERY_S)
            to_price.clear()
            try:
                while await price_baselines() >= 200:
                    pass
            except Exception:
                log.exception("baseline pricing failed; retrying")

    async def started(_: Runtime) -> None:
        rt.spawn(price_forever(), "baseline-pricing")

    async def on_arrived(conn: Connection, event: TaskArrived) -> None:
        await conn.execute(
            f"""INSERT INTO task_ledger AS t ({_SCOPE}, task_type, arrived_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (task_id) DO UPDATE SET {_SCOPE_UPDATE}, task_type = EXCLUDED.task_type,
                   arrived_at = least(t.arrived_at, EXCLUDED.arrived_at)""",
            *_scope(event.task_id, event.scope),
            event.task_type,
            event.occurred_at,
        )

    async def on_selected(conn: Connection, event: ModelSelected) -> None:
        # a task rejected, then approved and selected, ends selected (the later decision wins)
        # and keeps its rejection reason and time for the report
        await conn.execute(
            f"""INSERT INTO task_ledger AS t ({_SCOPE}, task_type, status,
                   model, provider, tier, strategy, estimated_cost_usd, baseline_model, baseline_cost_usd,
                   decided_at, policy, pattern, confidence, experimental, fallback_reason)
               VALUES ($1, $2, $3, $4, $5, $6, 'selected', $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                   $19)
               ON CONFLICT (task_id) DO UPDATE SET {_SCOPE_UPDATE}, task_type = EXCLUDED.task_type,
                   status = 'selected', model = EXCLUDED.model, provider = EXCLUDED.provider, tier = EXCLUDED.tier,
                   strategy = EXCLUDED.strategy, estimated_cost_usd = EXCLUDED.estimated_cost_usd,
                   baseline_model = EXCLUDED.baseline_model, baseline_cost_usd = EXCLUDED.baseline_cost_usd,
                   decided_at = EXCLUDED.decided_at, policy = EXCLUDED.policy, pattern = EXCLUDED.pattern,
                   confidence = EXCLUDED.confidence, experimental = EXCLUDED.experimental,
                   fallback_reason = EXCLUDED.fallback_reason
               WHERE t.decided_at IS NULL OR EXCLUDED.decided_at >= t.decided_at""",
            *_scope(event.task_id, event.scope),
            event.task_type,
            event.model,
            event.provider,
            event.tier.value,
            event.strategy,
            event.estimated_cost_usd,
            event.baseline_model,
            event.baseline_cost_usd,
            event.occurred_at,
            event.policy,
            event.pattern,
            event.confidence,
            event.experimental,
            event.fallback_reason,
        )

    async def on_rejected(conn: Connection, event: TaskRejected) -> None:
        # the rejection is remembered even if the task is selected later (approved, retried)
        await conn.execute(
            f"""INSERT INTO task_ledger AS t ({_SCOPE}, task_type, status, rejection_reason, rejected_at, decided_at)
               VALUES ($1, $2, $3, $4, $5, $6, 'rejected', $7, $8, $8)
               ON CONFLICT (task_id) DO UPDATE SET {_SCOPE_UPDATE}, task_type = EXCLUDED.task_type,
                   rejection_reason = EXCLUDED.rejection_reason, rejected_at = EXCLUDED.rejected_at
               WHERE t.rejected_at IS NULL OR EXCLUDED.rejected_at >= t.rejected_at""",
            *_scope(event.task_id, event.scope),
            event.task_type,
            event.reason.value,
            event.occurred_at,
        )
        # ...and it is the task's outcome unless a later decision selected a model
        await conn.execute(
            """UPDATE task_ledger SET status = 'rejected', decided_at = $2,
                   model = NULL, provider = NULL, tier = NULL, strategy = NULL, estimated_cost_usd = NULL,
                   baseline_model = NULL, baseline_cost_usd = NULL, policy = NULL, pattern = NULL,
                   confidence = NULL, experimental = NULL, fallback_reason = NULL
               WHERE task_id = $1 AND (decided_at IS NULL OR $2 >= decided_at)""",
            event.task_id,
            event.occurred_at,
        )

    async def on_cost(conn: Connection, event: CostRecorded) -> None:
        # every call a task made adds to its actual cost; the latest call names the model
        await conn.execute(
            f"""INSERT INTO task_ledger AS t ({_SCOPE}, task_type, actual_model, actual_cost_usd,
                   input_tokens, output_tokens, cost_recorded_at, cost_events, cached_input_tokens)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12)
               ON CONFLICT (task_id) DO UPDATE SET
                   actual_cost_usd = coalesce(t.actual_cost_usd, 0) + EXCLUDED.actual_cost_usd,
                   input_tokens = coalesce(t.input_tokens, 0) + EXCLUDED.input_tokens,
                   output_tokens = coalesce(t.output_tokens, 0) + EXCLUDED.output_tokens,
                   cached_input_tokens = coalesce(t.cached_input_tokens, 0) + EXCLUDED.cached_input_tokens,
                   cost_events = t.cost_events + 1,
                   actual_model = CASE
                       WHEN t.cost_recorded_at IS NULL OR EXCLUDED.cost_recorded_at >= t.cost_recorded_at
                       THEN EXCLUDED.actual_model ELSE t.actual_model END,
                   cost_recorded_at = greatest(t.cost_recorded_at, EXCLUDED.cost_recorded_at)""",
            *_scope(event.task_id, event.scope),
            event.task_type,
            event.model,
            event.cost_usd,
            event.input_tokens,
            event.output_tokens,
            event.occurred_at,
            event.cached_input_tokens,
        )

    async def on_feedback(conn: Connection, event: FeedbackRecorded) -> None:
        # the latest opinion of the task's answer wins
        await conn.execute(
            f"""INSERT INTO task_ledger AS t ({_SCOPE}, task_type, quality, quality_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT (task_id) DO UPDATE SET
                   quality = CASE WHEN t.quality_at IS NULL OR EXCLUDED.quality_at >= t.quality_at
                                  THEN EXCLUDED.quality ELSE t.quality END,
                   quality_at = greatest(t.quality_at, EXCLUDED.quality_at)""",
            *_scope(event.task_id, event.scope),
            event.task_type,
            event.quality,
            event.occurred_at,
        )

    def selected_applied(event: ModelSelected) -> None:
        meters.selected(event)
        to_price.set()

    def cost_applied(event: CostRecorded) -> None:
        meters.cost(event)
        to_price.set()

    async def summary(request: GetMetricsSummary) -> MetricsSummary:
        row = await rt.pool.fetchrow(
            """SELECT count(*) AS tasks,
                      count(*) FILTER (WHERE status = 'selected') AS selected,
                      count(*) FILTER (WHERE status = 'rejected') AS rejected,
                      coalesce(sum(cost_events), 0) AS costs_recorded,
                      coalesce(sum(estimated_cost_usd), 0) AS estimated,
                      coalesce(sum(baseline_cost_usd), 0) AS baseline,
                      coalesce(sum(actual_cost_usd), 0) AS actual
               FROM task_ledger WHERE $1::text IS NULL OR org_id = $1""",
            request.org_id,
        )
        assert row is not None
        return MetricsSummary(
            tasks=row["tasks"],
            selected=row["selected"],
            rejected=row["rejected"],
            costs_recorded=row["costs_recorded"],
            estimated_cost_usd=row["estimated"],
            baseline_cost_usd=row["baseline"],
            actual_cost_usd=row["actual"],
        )

    rt.consume_once(router, subjects.task_arrived, TaskArrived, on_arrived)
    rt.on_startup(started)
    rt.consume_once(router, subjects.model_selected, ModelSelected, on_selected, after_commit=selected_applied)
    rt.consume_once(router, subjects.task_rejected, TaskRejected, on_rejected, after_commit=meters.rejected)
    rt.consume_once(router, subjects.cost_recorded, CostRecorded, on_cost, after_commit=cost_applied)
    rt.consume_once(router, subjects.feedback_recorded, FeedbackRecorded, on_feedback)

    async def get_report(req: GetMetricsReport) -> MetricsReport:
        async with rt.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await report(conn, req)  # every figure from one snapshot of the ledger

    reply(router, subjects.metrics_summary, NAME, GetMetricsSummary, summary)
    reply(router, subjects.metrics_report, NAME, GetMetricsReport, get_report)


SPEC = ServiceSpec(name=NAME, migrations=Path(__file__).parent / "migrations", register=register)
