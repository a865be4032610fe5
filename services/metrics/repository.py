"""metrics' task ledger: one row per task, filled in by whichever of its events arrives (in any
order), the summary of it, and the baseline prices fetched after the events were applied."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

import asyncpg

from routewise.contracts.events import (
    CostAdjusted,
    CostRecorded,
    FeedbackRecorded,
    ModelSelected,
    Scope,
    TaskArrived,
    TaskRejected,
)
from routewise.runtime import adjustments
from routewise.runtime.db import Connection

_SCOPE = "task_id, org_id, team_id, user_id, workspace_id"
"""The ledger's identity columns, the first five parameters of every upsert (see ``_scope``)."""
_SCOPE_UPDATE = (
    "team_id = coalesce(EXCLUDED.team_id, t.team_id), user_id = coalesce(EXCLUDED.user_id, t.user_id), "
    "workspace_id = coalesce(EXCLUDED.workspace_id, t.workspace_id)"
)


def _scope(task_id: UUID, scope: Scope) -> tuple[object, ...]:
    return (task_id, scope.org_id, scope.team_id, scope.user_id, scope.workspace_id)


# --- the ledger, one event at a time --------------------------------------------------------


async def record_arrival(conn: Connection, event: TaskArrived) -> None:
    await conn.execute(
        f"""INSERT INTO task_ledger AS t ({_SCOPE}, task_type, arrived_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (task_id) DO UPDATE SET {_SCOPE_UPDATE}, task_type = EXCLUDED.task_type,
               arrived_at = least(t.arrived_at, EXCLUDED.arrived_at)""",
        *_scope(event.task_id, event.scope),
        event.task_type,
        event.occurred_at,
    )


async def record_selection(conn: Connection, event: ModelSelected) -> None:
    """A task rejected, then approved and selected, ends selected (the later decision wins) and
    keeps its rejection reason and time for the report."""
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


async def record_rejection(conn: Connection, event: TaskRejected) -> None:
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


async def record_cost(conn: Connection, event: CostRecorded) -> None:
    # every call a task made adds to its actual cost; the latest call names the model; a gateway
    # cache hit (no call, $0) marks the task cached with the cost it avoided
    if not event.cached:
        await adjustments.lock(conn, event.event_id)  # first, as an adjustment of it takes it first
    await conn.execute(
        f"""INSERT INTO task_ledger AS t ({_SCOPE}, task_type, actual_model, actual_cost_usd,
               input_tokens, output_tokens, cost_recorded_at, cost_events, cached_input_tokens, cached,
               avoided_cost_usd, self_priced_cost_usd)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $13, $14, $15)
           ON CONFLICT (task_id) DO UPDATE SET
               cached = t.cached OR EXCLUDED.cached,
               self_priced_cost_usd = CASE WHEN EXCLUDED.self_priced_cost_usd IS NULL THEN t.self_priced_cost_usd
                   ELSE coalesce(t.self_priced_cost_usd, 0) + EXCLUDED.self_priced_cost_usd END,
               avoided_cost_usd = CASE WHEN EXCLUDED.avoided_cost_usd IS NULL THEN t.avoided_cost_usd
                   ELSE coalesce(t.avoided_cost_usd, 0) + EXCLUDED.avoided_cost_usd END,
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
        event.cached,
        event.avoided_cost_usd,
        event.cost_usd if event.self_priced else None,
    )
    if not event.cached:  # a cache hit cost nothing: nothing to adjust
        await conn.execute(
            """INSERT INTO cost_ledger (event_id, task_id, input_tokens, output_tokens, cached_input_tokens)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING""",
            event.event_id,
            event.task_id,
            event.input_tokens,
            event.output_tokens,
            event.cached_input_tokens,
        )
        await adjustments.drain(conn, event.event_id, 0, lambda e: _apply_adjustment(conn, e))


async def adjust_cost(conn: Connection, event: CostAdjusted) -> None:
    """Move the task's actual cost (and its self-priced part) by the adjustment's delta, after its
    cost and the adjustments before it (one that comes early is parked until then): no figure is
    ever moved for a cost that is not here, or below zero."""
    await adjustments.lock(conn, event.cost_event_id)
    applied = await conn.fetchval("SELECT adjustments FROM cost_ledger WHERE event_id = $1", event.cost_event_id)
    await adjustments.in_order(conn, event, applied, lambda e: _apply_adjustment(conn, e))


async def _apply_adjustment(conn: Connection, event: CostAdjusted) -> None:
    """The task's cost moves by the delta. A void takes the call out of the task (its count of
    calls and its tokens: the baseline is priced again at the calls that stand); a correction of a
    voided call puts it back."""
    call = await conn.fetchrow(
        "SELECT void, input_tokens, output_tokens, cached_input_tokens FROM cost_ledger WHERE event_id = $1",
        event.cost_event_id,
    )
    assert call is not None  # applied only once its cost is here (adjustments.in_order, under its lock)
    await conn.execute(
        "UPDATE cost_ledger SET adjustments = $2, void = $3 WHERE event_id = $1",
        event.cost_event_id,
        event.sequence,
        event.void,
    )
    sign = 0 if call["void"] == event.void else (-1 if event.void else 1)
    await conn.execute(
        """UPDATE task_ledger SET actual_cost_usd = coalesce(actual_cost_usd, 0) + $2,
               self_priced_cost_usd = CASE WHEN $3 THEN coalesce(self_priced_cost_usd, 0) + $2
                   ELSE self_priced_cost_usd END,
               cost_adjustments = cost_adjustments + 1,
               cost_events = cost_events + $4,
               input_tokens = input_tokens + $4 * $5::bigint,
               output_tokens = output_tokens + $4 * $6::bigint,
               cached_input_tokens = coalesce(cached_input_tokens, 0) + $4 * $7::bigint
           WHERE task_id = $1""",
        event.task_id,
        event.delta_usd,
        event.self_priced,
        sign,
        call["input_tokens"] or 0,
        call["output_tokens"] or 0,
        call["cached_input_tokens"] or 0,
    )


async def record_feedback(conn: Connection, event: FeedbackRecorded) -> None:
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


# --- summary --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
    """The ledger's counts and sums, for one org or all of them."""

    tasks: int
    selected: int
    rejected: int
    costs_recorded: int
    estimated_usd: Decimal
    baseline_usd: Decimal
    actual_usd: Decimal


async def totals(conn: Connection | asyncpg.Pool, org_id: str | None) -> Totals:
    row = await conn.fetchrow(
        """SELECT count(*) AS tasks,
                  count(*) FILTER (WHERE status = 'selected') AS selected,
                  count(*) FILTER (WHERE status = 'rejected') AS rejected,
                  coalesce(sum(cost_events), 0) AS costs_recorded,
                  coalesce(sum(estimated_cost_usd), 0) AS estimated_usd,
                  coalesce(sum(baseline_cost_usd), 0) AS baseline_usd,
                  coalesce(sum(actual_cost_usd), 0) AS actual_usd
           FROM task_ledger WHERE $1::text IS NULL OR org_id = $1""",
        org_id,
    )
    assert row is not None
    return Totals(**dict(row))


# --- baseline pricing -----------------------------------------------------------------------

TO_PRICE = """
SELECT task_id, baseline_model, input_tokens, output_tokens, coalesce(cached_input_tokens, 0) AS cached
FROM task_ledger
WHERE baseline_model IS NOT NULL AND input_tokens IS NOT NULL
  AND baseline_priced_tokens IS DISTINCT FROM
      ARRAY[input_tokens, output_tokens, coalesce(cached_input_tokens, 0)]::bigint[]
ORDER BY cost_recorded_at LIMIT $1"""
"""Rows whose baseline is not priced at their current tokens (matches the task_ledger_to_price index)."""


@dataclass(frozen=True)
class Unpriced:
    """A task whose baseline model is not priced at the task's current token counts."""

    task_id: UUID
    baseline_model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int


async def to_price(conn: Connection | asyncpg.Pool, limit: int) -> list[Unpriced]:
    """The oldest ``limit`` tasks whose baseline is not priced at their current tokens."""
    return [
        Unpriced(r["task_id"], r["baseline_model"], r["input_tokens"], r["output_tokens"], r["cached"])
        for r in await conn.fetch(TO_PRICE, limit)
    ]


async def save_baseline_prices(
    conn: Connection | asyncpg.Pool, priced: list[tuple[Unpriced, Decimal | None, str | None]]
) -> int:
    """Store each baseline's price (or why it has none) for the tokens it was priced at, in one
    statement; a task whose tokens or baseline changed meanwhile is left (it is priced again).
    Returns how many were stored."""
    if not priced:
        return 0
    status = await conn.execute(
        """WITH p AS (
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::numeric[], $4::text[], $5::bigint[], $6::bigint[],
                   $7::bigint[]) AS p(task_id, model, cost, error, input_tokens, output_tokens, cached)
           ), locked AS (  -- in task order, as the consumers' batches take them: no deadlock with them
               SELECT t.task_id FROM task_ledger t JOIN p USING (task_id) ORDER BY t.task_id FOR UPDATE OF t
           )
           UPDATE task_ledger t SET baseline_actual_cost_usd = p.cost, baseline_price_error = p.error,
               baseline_priced_tokens = ARRAY[p.input_tokens, p.output_tokens, p.cached]::bigint[]
           FROM p
           WHERE t.task_id = p.task_id AND t.task_id IN (SELECT task_id FROM locked) AND t.baseline_model = p.model
               AND ARRAY[t.input_tokens, t.output_tokens, coalesce(t.cached_input_tokens, 0)]::bigint[]
                   = ARRAY[p.input_tokens, p.output_tokens, p.cached]::bigint[]""",
        [t.task_id for t, _, _ in priced],
        [t.baseline_model for t, _, _ in priced],
        [cost for _, cost, _ in priced],
        [error for _, _, error in priced],
        [t.input_tokens for t, _, _ in priced],
        [t.output_tokens for t, _, _ in priced],
        [t.cached_input_tokens for t, _, _ in priced],
    )
    return int(status.split()[-1])
