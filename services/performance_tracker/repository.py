"""performance-tracker's tables: bucketed statistics, outcomes, feedback and health."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import asyncpg

from routewise.contracts.events import CostAdjusted, CostRecorded, FeedbackRecorded
from routewise.contracts.vocabulary import Window
from routewise.runtime import adjustments, histogram
from routewise.runtime.db import Connection
from routewise.services.performance_tracker.domain import (
    GRANULARITIES,
    HEALTHY,
    KEEP,
    Health,
    Totals,
    bucket_start,
    window_start,
)

UNKNOWN = "unknown"


def _cells(model: str, task_type: str, pattern: str, at: datetime) -> list[tuple[str, str, str, str, datetime]]:
    """Every (dim, key, model, granularity, bucket) one outcome counts in."""
    dims = [("model", ""), ("task_type", task_type), ("pattern", pattern)]
    return [(d, k, model, g, bucket_start(g, at)) for d, k in dims for g in GRANULARITIES]


def _columns(cells: list[tuple[str, str, str, str, datetime]]) -> list[list[object]]:
    return [list(column) for column in zip(*cells, strict=True)]


_UNNEST = (
    "unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])"
    " AS c(dim, key, model, granularity, bucket_start)"
)


async def lock_model(conn: Connection, model: str) -> None:
    """Serialise everything that changes one model's statistics, on any replica, taken first.

    Outcomes and feedback of a model touch the same bucket rows, and a task's outcome and its
    feedback race on rows that may not exist yet (a row lock cannot cover those); one lock per
    model, before anything else, gives a single order: no lost update, no deadlock."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"performance:{model}")
    await conn.execute(
        "INSERT INTO model_health (model, state, since, reason)"
        " VALUES ($1, 'healthy', '1970-01-01T00:00:00Z', 'no outcome has demoted it')"
        " ON CONFLICT DO NOTHING",
        model,
    )
    await conn.execute("UPDATE model_health SET version = version + 1 WHERE model = $1", model)


async def remember_pattern(conn: Connection, task_id: UUID, pattern: str, task_type: str) -> None:
    await conn.execute(
        "INSERT INTO task_patterns (task_id, pattern, task_type) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        task_id,
        pattern,
        task_type,
    )


async def record_outcome(conn: Connection, event: CostRecorded) -> None:
    """Count one call in every bucket it belongs to (per model, task type and pattern), and remember
    where it counted, for the adjustments of its cost (those that came first apply now)."""
    await adjustments.lock(conn, event.event_id)  # first, as an adjustment of it takes it first
    await lock_model(conn, event.model)
    pattern = await conn.fetchval("SELECT pattern FROM task_patterns WHERE task_id = $1", event.task_id) or UNKNOWN
    cells = _cells(event.model, event.task_type, pattern, event.occurred_at)
    columns = _columns(cells)
    timed = event.latency_ms is not None and event.latency_ms > 0
    await conn.execute(
        f"""INSERT INTO stat_buckets AS s (dim, key, model, granularity, bucket_start, requests, successes,
                success_latency_ms, output_tokens_timed, cost_usd)
            SELECT c.dim, c.key, c.model, c.granularity, c.bucket_start, 1, $6, $7, $8, $9 FROM {_UNNEST}
            ON CONFLICT (model, dim, key, granularity, bucket_start) DO UPDATE SET
                requests = s.requests + 1, successes = s.successes + EXCLUDED.successes,
                success_latency_ms = s.success_latency_ms + EXCLUDED.success_latency_ms,
                output_tokens_timed = s.output_tokens_timed + EXCLUDED.output_tokens_timed,
                cost_usd = s.cost_usd + EXCLUDED.cost_usd""",
        *columns,
        int(event.success),
        float(event.latency_ms or 0) if timed and event.success else 0.0,
        event.output_tokens if timed and event.success else 0,
        event.cost_usd,
    )
    if timed:
        await conn.execute(
            f"""INSERT INTO latency_buckets AS l (dim, key, model, granularity, bucket_start, idx, n)
                SELECT c.dim, c.key, c.model, c.granularity, c.bucket_start, $6, 1 FROM {_UNNEST}
                ON CONFLICT (model, dim, key, granularity, bucket_start, idx) DO UPDATE SET n = l.n + 1""",
            *columns,
            histogram.bucket_of(float(event.latency_ms or 0)),
        )
    if not event.success:
        await conn.execute(
            f"""INSERT INTO error_buckets AS e (dim, key, model, granularity, bucket_start, error_type, n)
                SELECT c.dim, c.key, c.model, c.granularity, c.bucket_start, $6, 1 FROM {_UNNEST}
                ON CONFLICT (model, dim, key, granularity, bucket_start, error_type) DO UPDATE SET n = e.n + 1""",
            *columns,
            event.error_type or "unknown",
        )
    await conn.execute(
        """INSERT INTO outcomes (task_id, model, task_type, pattern, occurred_at) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (task_id, model) DO NOTHING""",
        event.task_id,
        event.model,
        event.task_type,
        pattern,
        event.occurred_at,
    )
    await conn.execute(
        """INSERT INTO cost_outcomes (event_id, task_id, model, task_type, pattern, occurred_at)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING""",
        event.event_id,
        event.task_id,
        event.model,
        event.task_type,
        pattern,
        event.occurred_at,
    )
    await adjustments.drain(conn, event.event_id, 0, lambda e: _apply_adjustment(conn, e))
    pending = await conn.fetchrow(
        "SELECT quality FROM feedback WHERE task_id = $1 AND model = $2 AND NOT applied FOR UPDATE",
        event.task_id,
        event.model,
    )
    if pending is not None:  # feedback came before the cost: count it now
        await _add_quality(conn, event.task_id, event.model, pending["quality"], sign=1)
        await conn.execute(
            "UPDATE feedback SET applied = true WHERE task_id = $1 AND model = $2", event.task_id, event.model
        )


async def adjust_cost(conn: Connection, event: CostAdjusted) -> None:
    """Move the cost statistics of the adjusted call by the adjustment's delta, in the buckets its
    outcome counted in (those not pruned yet), after its outcome and the adjustments before it (one that
    comes early is parked until then). A call older than the raw outcomes' retention is no longer
    known: its adjustments stay parked, and its statistics as they were."""
    await adjustments.lock(conn, event.cost_event_id)
    applied = await conn.fetchval("SELECT adjustments FROM cost_outcomes WHERE event_id = $1", event.cost_event_id)
    await adjustments.in_order(conn, event, applied, lambda e: _apply_adjustment(conn, e))


async def _apply_adjustment(conn: Connection, event: CostAdjusted) -> None:
    call = await conn.fetchrow(
        "UPDATE cost_outcomes SET adjustments = $2 WHERE event_id = $1"
        " RETURNING model, task_type, pattern, occurred_at",
        event.cost_event_id,
        event.sequence,
    )
    assert call is not None
    await lock_model(conn, call["model"])
    cells = _cells(call["model"], call["task_type"], call["pattern"], call["occurred_at"])
    await conn.execute(  # the call's buckets that are still kept (older minutes and hours are pruned)
        f"""UPDATE stat_buckets s SET cost_usd = s.cost_usd + $6 FROM {_UNNEST}
            WHERE s.dim = c.dim AND s.key = c.key AND s.model = c.model AND s.granularity = c.granularity
              AND s.bucket_start = c.bucket_start""",
        *_columns(cells),
        event.delta_usd,
    )


async def _add_quality(conn: Connection, task_id: UUID, model: str, quality: float, *, sign: int) -> bool:
    outcome = await conn.fetchrow(
        "SELECT task_type, pattern, occurred_at FROM outcomes WHERE task_id = $1 AND model = $2", task_id, model
    )
    if outcome is None:
        return False
    cells = _cells(model, outcome["task_type"], outcome["pattern"], outcome["occurred_at"])
    await conn.execute(
        f"""UPDATE stat_buckets s SET quality_sum = s.quality_sum + $6 * $7::float8,
                quality_sq_sum = s.quality_sq_sum + $6 * $7::float8 * $7::float8, quality_n = s.quality_n + $6
            FROM {_UNNEST}
            WHERE s.dim = c.dim AND s.key = c.key AND s.model = c.model AND s.granularity = c.granularity
              AND s.bucket_start = c.bucket_start""",
        *_columns(cells),
        sign,
        quality,
    )
    return True


async def record_feedback(conn: Connection, event: FeedbackRecorded) -> None:
    """The latest feedback for a task wins: an earlier one's quality is taken out first."""
    await lock_model(conn, event.model)
    previous = await conn.fetchrow(
        "SELECT quality, occurred_at, applied FROM feedback WHERE task_id = $1 AND model = $2 FOR UPDATE",
        event.task_id,
        event.model,
    )
    if previous is not None and previous["occurred_at"] >= event.occurred_at:
        return  # an older opinion arriving late changes nothing
    if previous is not None and previous["applied"]:
        await _add_quality(conn, event.task_id, event.model, previous["quality"], sign=-1)
    applied = await _add_quality(conn, event.task_id, event.model, event.quality, sign=1)
    await conn.execute(
        """INSERT INTO feedback (task_id, model, quality, occurred_at, event_id, applied)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (task_id, model) DO UPDATE SET quality = EXCLUDED.quality, occurred_at = EXCLUDED.occurred_at,
               event_id = EXCLUDED.event_id, applied = EXCLUDED.applied""",
        event.task_id,
        event.model,
        event.quality,
        event.occurred_at,
        event.event_id,
        applied,
    )


async def totals(
    conn: Connection | asyncpg.Pool,
    window: Window,
    now: datetime,
    *,
    model: str | None = None,
    dim: str = "model",
    key: str | None = None,
) -> dict[tuple[str, str], Totals]:
    """Counters over a window, per (model, key) of one dimension."""
    granularity, since = window_start(window, now)
    args = (dim, granularity, since, model, key)
    where = """dim = $1 AND granularity = $2 AND bucket_start >= $3
               AND ($4::text IS NULL OR model = $4) AND ($5::text IS NULL OR key = $5)"""
    out: dict[tuple[str, str], Totals] = defaultdict(Totals)
    for r in await conn.fetch(
        f"""SELECT model, key, sum(requests) AS requests, sum(successes) AS successes,
                   sum(success_latency_ms) AS success_latency_ms,
                   sum(output_tokens_timed) AS output_tokens_timed, sum(cost_usd) AS cost_usd,
                   sum(quality_sum) AS quality_sum, sum(quality_sq_sum) AS quality_sq_sum, sum(quality_n) AS quality_n
            FROM stat_buckets WHERE {where} GROUP BY model, key""",
        *args,
    ):
        t = out[(r["model"], r["key"])]
        t.requests, t.successes = int(r["requests"]), int(r["successes"])
        t.success_latency_ms = float(r["success_latency_ms"])
        t.output_tokens_timed, t.cost_usd = int(r["output_tokens_timed"]), Decimal(r["cost_usd"])
        t.quality_sum, t.quality_sq_sum, t.quality_n = (
            float(r["quality_sum"]),
            float(r["quality_sq_sum"]),
            int(r["quality_n"]),
        )
    for r in await conn.fetch(
        f"SELECT model, key, idx, sum(n) AS n FROM latency_buckets WHERE {where} GROUP BY model, key, idx", *args
    ):
        out[(r["model"], r["key"])].latency[r["idx"]] += float(r["n"])
    for r in await conn.fetch(
        f"SELECT model, key, error_type, sum(n) AS n FROM error_buckets WHERE {where} GROUP BY model, key, error_type",
        *args,
    ):
        out[(r["model"], r["key"])].errors[r["error_type"]] = int(r["n"])
    return dict(out)


async def recent(conn: Connection, model: str, since: datetime) -> tuple[int, int]:
    """(requests, successes) of a model in minute buckets from ``since``."""
    row = await conn.fetchrow(
        """SELECT coalesce(sum(requests), 0) AS requests, coalesce(sum(successes), 0) AS successes FROM stat_buckets
           WHERE model = $1 AND dim = 'model' AND granularity = 'minute' AND bucket_start >= $2""",
        model,
        bucket_start("minute", since),
    )
    assert row is not None
    return int(row["requests"]), int(row["successes"])


async def health(conn: Connection | asyncpg.Pool, model: str, *, lock: bool = False) -> Health:
    row = await conn.fetchrow(
        "SELECT state, since, reason, probation_successes FROM model_health WHERE model = $1"
        + (" FOR UPDATE" if lock else ""),
        model,
    )
    return Health(row["state"], row["since"], row["reason"], row["probation_successes"]) if row else HEALTHY


async def all_health(conn: Connection | asyncpg.Pool) -> dict[str, Health]:
    rows = await conn.fetch("SELECT model, state, since, reason, probation_successes FROM model_health")
    return {r["model"]: Health(r["state"], r["since"], r["reason"], r["probation_successes"]) for r in rows}


async def save_health(conn: Connection, model: str, h: Health) -> None:
    await conn.execute(
        """INSERT INTO model_health (model, state, since, reason, probation_successes) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (model) DO UPDATE SET state = EXCLUDED.state, since = EXCLUDED.since, reason = EXCLUDED.reason,
               probation_successes = EXCLUDED.probation_successes, version = model_health.version + 1""",
        model,
        h.state,
        h.since,
        h.reason,
        h.probation_successes,
    )


async def demoted_models(conn: Connection) -> list[str]:
    rows = await conn.fetch("SELECT model FROM model_health WHERE state = 'demoted' FOR UPDATE SKIP LOCKED")
    return [r["model"] for r in rows]


async def prune(conn: Connection, now: datetime) -> None:
    for granularity, keep in KEEP.items():
        for table in ("stat_buckets", "latency_buckets", "error_buckets"):
            await conn.execute(
                f"DELETE FROM {table} WHERE granularity = $1 AND bucket_start < $2", granularity, now - keep
            )


async def version(conn: Connection, model: str) -> int:
    """How many times the model's statistics or health changed: a snapshot's version."""
    found = await conn.fetchval("SELECT version FROM model_health WHERE model = $1", model)
    return int(found or 0)
