"""performance-tracker's bus adapters: outcome counters per model, quality feedback."""

from __future__ import annotations

from pathlib import Path

from faststream.nats import NatsRouter

from shared.bus import reply
from shared.db import Connection
from shared.events import CostRecorded, FeedbackRecorded
from shared.requests import ModelPerformance, Performance, QueryPerformance
from shared.service import Runtime, ServiceSpec

NAME = "performance_tracker"


def register(router: NatsRouter, rt: Runtime) -> None:
    subjects = rt.subjects

    async def on_cost_recorded(conn: Connection, event: CostRecorded) -> None:
        await conn.execute(
            """INSERT INTO model_stats AS s (model, provider, requests, successes, failures, latency_ms_sum,
                   latency_samples, output_tokens_sum, cost_usd_sum)
               VALUES ($1, $2, 1, $3, $4, coalesce($5::float8, 0), $6, $7, $8)
               ON CONFLICT (model) DO UPDATE SET
                   requests = s.requests + 1,
                   successes = s.successes + EXCLUDED.successes,
                   failures = s.failures + EXCLUDED.failures,
                   latency_ms_sum = s.latency_ms_sum + EXCLUDED.latency_ms_sum,
                   latency_samples = s.latency_samples + EXCLUDED.latency_samples,
                   output_tokens_sum = s.output_tokens_sum + EXCLUDED.output_tokens_sum,
                   cost_usd_sum = s.cost_usd_sum + EXCLUDED.cost_usd_sum,
                   updated_at = now()""",
            event.model,
            event.provider,
            int(event.success),
            int(not event.success),
            event.latency_ms,
            int(event.latency_ms is not None),
            event.output_tokens,
            event.cost_usd,
        )

    async def on_feedback(conn: Connection, event: FeedbackRecorded) -> None:
        # the latest feedback for a task wins, whatever order the events arrive in
        await conn.execute(
            """INSERT INTO feedback AS f (task_id, model, quality, occurred_at, event_id)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (task_id, model) DO UPDATE SET
                   quality = EXCLUDED.quality, occurred_at = EXCLUDED.occurred_at, event_id = EXCLUDED.event_id
               WHERE f.occurred_at < EXCLUDED.occurred_at""",
            event.task_id,
            event.model,
            event.quality,
            event.occurred_at,
            event.event_id,
        )

    async def query(request: QueryPerformance) -> Performance:
        rows = await rt.pool.fetch(
            """SELECT s.*, q.mean_quality, coalesce(q.n, 0) AS feedback_count
               FROM model_stats s
               LEFT JOIN (SELECT model, avg(quality) AS mean_quality, count(*) AS n FROM feedback GROUP BY model) q
                 USING (model)
               WHERE $1::text IS NULL OR s.model = $1
               ORDER BY s.model""",
            request.model,
        )
        return Performance(
            models=[
                ModelPerformance(
                    model=r["model"],
                    provider=r["provider"],
                    requests=r["requests"],
                    successes=r["successes"],
                    failures=r["failures"],
                    mean_latency_ms=(r["latency_ms_sum"] / r["latency_samples"]) if r["latency_samples"] else None,
                    mean_quality=r["mean_quality"],
                    feedback_count=r["feedback_count"],
                )
                for r in rows
            ]
        )

    rt.consume_once(router, subjects.cost_recorded, CostRecorded, on_cost_recorded)
    rt.consume_once(router, subjects.feedback_recorded, FeedbackRecorded, on_feedback)
    reply(router, subjects.performance_query, NAME, QueryPerformance, query)


SPEC = ServiceSpec(name=NAME, migrations=Path(__file__).parent / "migrations", register=register)
