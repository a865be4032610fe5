"""metrics' bus adapters: one ledger row per task from its decision and its cost."""

from __future__ import annotations

from pathlib import Path

from faststream.nats import NatsRouter

from shared.bus import reply
from shared.db import Connection
from shared.events import CostRecorded, ModelSelected, TaskRejected
from shared.requests import GetMetricsSummary, MetricsSummary
from shared.service import Runtime, ServiceSpec

NAME = "metrics"


def register(router: NatsRouter, rt: Runtime) -> None:
    subjects = rt.subjects

    async def on_selected(conn: Connection, event: ModelSelected) -> None:
        await conn.execute(
            """INSERT INTO task_ledger AS t (task_id, org_id, task_type, status, model, provider, tier, strategy,
                   estimated_cost_usd, baseline_model, baseline_cost_usd, decided_at)
               VALUES ($1, $2, $3, 'selected', $4, $5, $6, $7, $8, $9, $10, $11)
               ON CONFLICT (task_id) DO UPDATE SET status = 'selected', model = EXCLUDED.model,
                   provider = EXCLUDED.provider, tier = EXCLUDED.tier, strategy = EXCLUDED.strategy,
                   estimated_cost_usd = EXCLUDED.estimated_cost_usd, baseline_model = EXCLUDED.baseline_model,
                   baseline_cost_usd = EXCLUDED.baseline_cost_usd, decided_at = EXCLUDED.decided_at""",
            event.task_id,
            event.scope.org_id,
            event.task_type,
            event.model,
            event.provider,
            event.tier.value,
            event.strategy,
            event.estimated_cost_usd,
            event.baseline_model,
            event.baseline_cost_usd,
            event.occurred_at,
        )

    async def on_rejected(conn: Connection, event: TaskRejected) -> None:
        await conn.execute(
            """INSERT INTO task_ledger (task_id, org_id, task_type, status, rejection_reason, decided_at)
               VALUES ($1, $2, $3, 'rejected', $4, $5)
               ON CONFLICT (task_id) DO UPDATE SET status = 'rejected',
                   rejection_reason = EXCLUDED.rejection_reason, decided_at = EXCLUDED.decided_at""",
            event.task_id,
            event.scope.org_id,
            event.task_type,
            event.reason.value,
            event.occurred_at,
        )

    async def on_cost(conn: Connection, event: CostRecorded) -> None:
        # every call a task made adds to its actual cost; the latest call names the model
        await conn.execute(
            """INSERT INTO task_ledger AS t (task_id, org_id, task_type, actual_model, actual_cost_usd,
                   input_tokens, output_tokens, cost_recorded_at, cost_events)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1)
               ON CONFLICT (task_id) DO UPDATE SET
                   actual_cost_usd = coalesce(t.actual_cost_usd, 0) + EXCLUDED.actual_cost_usd,
                   input_tokens = coalesce(t.input_tokens, 0) + EXCLUDED.input_tokens,
                   output_tokens = coalesce(t.output_tokens, 0) + EXCLUDED.output_tokens,
                   cost_events = t.cost_events + 1,
                   actual_model = CASE
                       WHEN t.cost_recorded_at IS NULL OR EXCLUDED.cost_recorded_at >= t.cost_recorded_at
                       THEN EXCLUDED.actual_model ELSE t.actual_model END,
                   cost_recorded_at = greatest(t.cost_recorded_at, EXCLUDED.cost_recorded_at)""",
            event.task_id,
            event.scope.org_id,
            event.task_type,
            event.model,
            event.cost_usd,
            event.input_tokens,
            event.output_tokens,
            event.occurred_at,
        )

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

    rt.consume_once(router, subjects.model_selected, ModelSelected, on_selected)
    rt.consume_once(router, subjects.task_rejected, TaskRejected, on_rejected)
    rt.consume_once(router, subjects.cost_recorded, CostRecorded, on_cost)
    reply(router, subjects.metrics_summary, NAME, GetMetricsSummary, summary)


SPEC = ServiceSpec(name=NAME, migrations=Path(__file__).parent / "migrations", register=register)
