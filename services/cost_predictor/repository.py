"""cost-predictor's tables: price overrides (audited), registered models (audited) and the
catalog's revision, output profiles, estimates and their errors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from routewise.contracts.catalog import CatalogModel
from routewise.contracts.cost import CostAdjustment, EstimateAccuracyRow, ModelEstimate, PriceEntry, SetPrice
from routewise.contracts.events import CostAdjusted, CostRecorded, ModelSelected, Scope
from routewise.estimates import observe
from routewise.runtime.db import Connection
from routewise.services.cost_predictor.pricing import Override
from routewise.services.cost_predictor.trust import Decision

_OVERRIDE_COLUMNS = "provider, model, input_mtok, output_mtok, cache_read_mtok, cache_write_mtok, context_window"


def _override(row: asyncpg.Record) -> Override:
    return Override(**{k: row[k] for k in _OVERRIDE_COLUMNS.split(", ")})


async def load_overrides(pool: asyncpg.Pool) -> list[Override]:
    return [_override(r) for r in await pool.fetch(f"SELECT {_OVERRIDE_COLUMNS} FROM price_overrides")]


async def list_override_entries(pool: asyncpg.Pool) -> list[PriceEntry]:
    rows = await pool.fetch(
        f"SELECT {_OVERRIDE_COLUMNS}, updated_by, updated_at FROM price_overrides ORDER BY provider, model"
    )
    return [PriceEntry(source="override", **dict(r)) for r in rows]


def _as_json(row: asyncpg.Record | None) -> dict[str, Any] | None:
    """A row for a jsonb column (the connection's codec serialises it): amounts and times as text."""
    if row is None:
        return None
    return {k: str(v) if isinstance(v, Decimal | datetime) else v for k, v in dict(row).items()}


async def set_override(conn: Connection, request: SetPrice) -> PriceEntry:
    before = await conn.fetchrow(
        f"SELECT {_OVERRIDE_COLUMNS} FROM price_overrides WHERE provider = $1 AND model = $2 FOR UPDATE",
        request.provider,
        request.model,
    )
    after = await conn.fetchrow(
        f"""INSERT INTO price_overrides ({_OVERRIDE_COLUMNS}, updated_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (provider, model) DO UPDATE SET input_mtok = EXCLUDED.input_mtok,
                output_mtok = EXCLUDED.output_mtok, cache_read_mtok = EXCLUDED.cache_read_mtok,
                cache_write_mtok = EXCLUDED.cache_write_mtok, context_window = EXCLUDED.context_window,
                updated_by = EXCLUDED.updated_by, updated_at = now()
            RETURNING {_OVERRIDE_COLUMNS}, updated_by, updated_at""",
        request.provider,
        request.model,
        request.input_mtok,
        request.output_mtok,
        request.cache_read_mtok,
        request.cache_write_mtok,
        request.context_window,
        request.actor,
    )
    assert after is not None
    await conn.execute(
        "INSERT INTO price_audit (actor, action, provider, model, before, after)"
        " VALUES ($1, 'set', $2, $3, $4::jsonb, $5::jsonb)",
        request.actor,
        request.provider,
        request.model,
        _as_json(before),
        _as_json(after),
    )
    return PriceEntry(source="override", **dict(after))


async def remove_override(conn: Connection, provider: str, model: str, actor: str) -> bool:
    before = await conn.fetchrow(
        f"DELETE FROM price_overrides WHERE provider = $1 AND model = $2 RETURNING {_OVERRIDE_COLUMNS}", provider, model
    )
    if before is None:
        return False
    await conn.execute(
        "INSERT INTO price_audit (actor, action, provider, model, before) VALUES ($1, 'remove', $2, $3, $4::jsonb)",
        actor,
        provider,
        model,
        _as_json(before),
    )
    return True


# --- registered models and the catalog's revision --------------------------------------------

_MODEL_COLUMNS = "id, provider, tier, quality_prior, context_window, capabilities, price_ref"


@dataclass(frozen=True)
class Registered:
    """A model registered at run time, and who registered it when."""

    model: CatalogModel
    by: str
    at: datetime


def _registered(row: asyncpg.Record) -> Registered:
    model = CatalogModel.model_validate({k: row[k] for k in _MODEL_COLUMNS.split(", ")})
    return Registered(model, row["registered_by"], row["registered_at"])


@dataclass(frozen=True)
class CatalogState:
    """What the live catalog is made of, read at one moment."""

    revision: int
    registered: list[Registered]
    overrides: list[Override]


async def catalog_state(conn: Connection) -> CatalogState:
    """The revision, the registered models and the price overrides (in a snapshot transaction,
    so that the three are of one moment)."""
    revision = await conn.fetchval("SELECT revision FROM catalog_revision")
    rows = await conn.fetch(f"SELECT {_MODEL_COLUMNS}, registered_by, registered_at FROM registered_models ORDER BY id")
    overrides = await conn.fetch(f"SELECT {_OVERRIDE_COLUMNS} FROM price_overrides")
    return CatalogState(revision, [_registered(r) for r in rows], [_override(r) for r in overrides])


async def catalog_revision(conn: Connection | asyncpg.Pool) -> int:
    revision: int = await conn.fetchval("SELECT revision FROM catalog_revision")
    return revision


async def next_revision(conn: Connection) -> int:
    """One more revision of the catalog, in the transaction that changes it (the row lock also
    puts two changes one after the other)."""
    revision: int = await conn.fetchval("UPDATE catalog_revision SET revision = revision + 1 RETURNING revision")
    return revision


async def count_registered(conn: Connection) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM registered_models")
    return count


async def register_model(conn: Connection, model: CatalogModel, actor: str) -> Registered:
    """Add or replace a registered model, audited."""
    before = await conn.fetchrow(f"SELECT {_MODEL_COLUMNS} FROM registered_models WHERE id = $1 FOR UPDATE", model.id)
    row = await conn.fetchrow(
        f"""INSERT INTO registered_models ({_MODEL_COLUMNS}, registered_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (id) DO UPDATE SET provider = EXCLUDED.provider, tier = EXCLUDED.tier,
                quality_prior = EXCLUDED.quality_prior, context_window = EXCLUDED.context_window,
                capabilities = EXCLUDED.capabilities, price_ref = EXCLUDED.price_ref,
                registered_by = EXCLUDED.registered_by, registered_at = now()
            RETURNING {_MODEL_COLUMNS}, registered_by, registered_at""",
        model.id,
        model.provider,
        model.tier.value,
        model.quality_prior,
        model.context_window,
        model.capabilities,
        model.price_ref,
        actor,
    )
    assert row is not None
    await conn.execute(
        "INSERT INTO model_audit (actor, action, model, before, after)"
        " VALUES ($1, 'register', $2, $3::jsonb, $4::jsonb)",
        actor,
        model.id,
        dict(before) if before else None,
        model.model_dump(mode="json"),
    )
    return _registered(row)


async def remove_model(conn: Connection, model_id: str, actor: str) -> bool:
    """Remove a registered model, audited; False when it is not registered."""
    before = await conn.fetchrow(f"DELETE FROM registered_models WHERE id = $1 RETURNING {_MODEL_COLUMNS}", model_id)
    if before is None:
        return False
    await conn.execute(
        "INSERT INTO model_audit (actor, action, model, before) VALUES ($1, 'remove', $2, $3::jsonb)",
        actor,
        model_id,
        dict(before),
    )
    return True


async def model_audit(conn: Connection | asyncpg.Pool, model_id: str) -> list[dict[str, Any]]:
    """A model's registrations and removals, oldest first."""
    rows = await conn.fetch(
        "SELECT at, actor, action, before, after FROM model_audit WHERE model = $1 ORDER BY id", model_id
    )
    return [dict(r) for r in rows]


# --- output profiles, estimates and their errors -------------------------------------------


async def profiles(pool: asyncpg.Pool, task_type: str, models: list[str]) -> dict[str, list[float]]:
    rows = await pool.fetch(
        "SELECT model, counts FROM output_profiles WHERE task_type = $1 AND model = ANY($2::text[])", task_type, models
    )
    return {r["model"]: list(r["counts"]) for r in rows}


async def task_type_profiles(
    pool: asyncpg.Pool, task_types: list[str] | None = None
) -> dict[str, dict[str, list[float]]]:
    """Every model's output profile, by task type (``task_types``: only those)."""
    rows = await pool.fetch(
        "SELECT task_type, model, counts FROM output_profiles WHERE $1::text[] IS NULL OR task_type = ANY($1::text[])",
        task_types,
    )
    by_type: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        by_type.setdefault(r["task_type"], {})[r["model"]] = list(r["counts"])
    return by_type


async def learn_output(conn: Connection, task_type: str, model: str, output_tokens: int) -> None:
    """Fold one observation into the (task_type, model) histogram, under a row lock."""
    row = await conn.fetchrow(
        "SELECT counts FROM output_profiles WHERE task_type = $1 AND model = $2 FOR UPDATE", task_type, model
    )
    counts = observe(list(row["counts"]) if row else [], output_tokens)
    await conn.execute(
        """INSERT INTO output_profiles (task_type, model, counts, observations) VALUES ($1, $2, $3, 1)
           ON CONFLICT (task_type, model) DO UPDATE SET counts = EXCLUDED.counts,
               observations = output_profiles.observations + 1, updated_at = now()""",
        task_type,
        model,
        counts,
    )


Predictions = dict[str, dict[str, Any]]
"""What a task's estimate said per model: ``{"p50", "p90"}`` output tokens and ``"cost_usd"`` (p50)."""


def predictions_of(estimates: list[ModelEstimate]) -> Predictions:
    return {
        e.model: {"p50": e.output_tokens_p50, "p90": e.output_tokens_p90, "cost_usd": str(e.cost_usd_p50)}
        for e in estimates
    }


def decided_predictions(event: ModelSelected) -> Predictions:
    """What the selector's estimate said of each candidate (one that names its output tokens)."""
    return {
        c.model: {"p50": c.output_tokens_p50, "p90": c.output_tokens_p90, "cost_usd": str(c.estimated_cost_usd)}
        for c in event.candidates
        if c.output_tokens_p50 is not None and c.output_tokens_p90 is not None
    }


async def keep_estimate(
    conn: Connection | asyncpg.Pool, task_id: UUID, task_type: str, predictions: Predictions
) -> None:
    """Keep a task's estimate and, in the same statement, compare it with the successful calls
    of the task recorded before it came (a cost may overtake its decision's ModelSelected)."""
    if not predictions:
        return
    await conn.execute(
        """WITH kept AS (
               INSERT INTO estimates (task_id, task_type, predictions) VALUES ($1, $2, $3)
               ON CONFLICT (task_id) DO UPDATE SET
                   predictions = estimates.predictions || EXCLUDED.predictions,  -- a task decided again: both
                   task_type = EXCLUDED.task_type
               RETURNING task_id, task_type, predictions
           )
           INSERT INTO estimate_errors (event_id, task_id, task_type, model, predicted_output_p50,
               predicted_output_p90, actual_output, predicted_cost_usd, actual_cost_usd, recorded_at)
           SELECT r.event_id, r.task_id, k.task_type, r.learnt_model, (p ->> 'p50')::int, (p ->> 'p90')::int,
               r.output_tokens, (p ->> 'cost_usd')::numeric, r.cost_usd, r.occurred_at
           FROM kept k JOIN recorded_costs r ON r.task_id = k.task_id
               CROSS JOIN LATERAL (SELECT k.predictions -> r.learnt_model AS p) AS m
           WHERE r.success AND r.output_tokens IS NOT NULL AND p IS NOT NULL
           ON CONFLICT (event_id) DO NOTHING""",
        task_id,
        task_type,
        predictions,
    )


async def record_error(
    conn: Connection, *, event_id: UUID, task_id: UUID, model: str, output_tokens: int, cost_usd: Any, at: Any
) -> bool:
    """Compare the task's estimate for ``model`` with what it really cost; False when there was none."""
    row = await conn.fetchrow(
        "SELECT task_type, predictions -> $2 AS p FROM estimates WHERE task_id = $1", task_id, model
    )
    if row is None or row["p"] is None:
        return False
    p = row["p"]
    await conn.execute(
        """INSERT INTO estimate_errors (event_id, task_id, task_type, model, predicted_output_p50, predicted_output_p90,
               actual_output, predicted_cost_usd, actual_cost_usd, recorded_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::numeric, $9, $10) ON CONFLICT (event_id) DO NOTHING""",
        event_id,
        task_id,
        row["task_type"],
        model,
        p["p50"],
        p["p90"],
        output_tokens,
        p["cost_usd"],
        cost_usd,
        at,
    )
    return True


async def accuracy(pool: asyncpg.Pool, model: str | None, task_type: str | None) -> list[EstimateAccuracyRow]:
    rows = await pool.fetch(
        """SELECT model, task_type, count(*) AS samples,
                  avg(abs(predicted_cost_usd - actual_cost_usd) / nullif(actual_cost_usd, 0)) * 100 AS cost_mape,
                  avg((predicted_cost_usd - actual_cost_usd) / nullif(actual_cost_usd, 0)) * 100 AS cost_bias,
                  avg(abs(predicted_output_p50 - actual_output)::float8 / nullif(actual_output, 0)) * 100 AS out_mape,
                  avg((predicted_output_p50 - actual_output)::float8 / nullif(actual_output, 0)) * 100 AS out_bias,
                  avg((actual_output <= predicted_output_p90)::int) * 100 AS p90_coverage
           FROM estimate_errors
           WHERE ($1::text IS NULL OR model = $1) AND ($2::text IS NULL OR task_type = $2)
           GROUP BY model, task_type ORDER BY model, task_type""",
        model,
        task_type,
    )
    return [
        EstimateAccuracyRow(
            model=r["model"],
            task_type=r["task_type"],
            samples=r["samples"],
            cost_mape_percent=round(float(r["cost_mape"] or 0), 2),
            cost_bias_percent=round(float(r["cost_bias"] or 0), 2),
            output_mape_percent=round(float(r["out_mape"] or 0), 2),
            output_bias_percent=round(float(r["out_bias"] or 0), 2),
            p90_coverage_percent=round(float(r["p90_coverage"] or 0), 2),
        )
        for r in rows
    ]


# --- recorded costs and their adjustments ----------------------------------------------------


async def keep_recorded(conn: Connection, event: CostRecorded, learnt_model: str) -> None:
    """Remember a recorded cost (once per event), for its adjustments, and what its call answered
    under ``learnt_model`` (the catalog's id of its model), for an estimate that comes after it."""
    scope = event.scope
    await conn.execute(
        """INSERT INTO recorded_costs (event_id, task_id, attempt, org_id, team_id, user_id, workspace_id, task_type,
               model, provider, cost_usd, recorded_cost_usd, self_priced, occurred_at, output_tokens, success,
               learnt_model)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14, $15, $16)
           ON CONFLICT (event_id) DO NOTHING""",
        event.event_id,
        event.task_id,
        event.attempt,
        scope.org_id,
        scope.team_id,
        scope.user_id,
        scope.workspace_id,
        event.task_type,
        event.model,
        event.provider,
        event.cost_usd,
        event.self_priced,
        event.occurred_at,
        event.output_tokens,
        event.success,
        learnt_model,
    )


@dataclass(frozen=True)
class RecordedCost:
    """A recorded cost of one call, as it stands after its adjustments."""

    event_id: UUID
    task_id: UUID
    attempt: int
    scope: Scope
    task_type: str
    model: str
    provider: str
    cost_usd: Decimal
    self_priced: bool
    adjustments: int
    occurred_at: datetime


_RECORDED_COLUMNS = (
    "event_id, task_id, attempt, org_id, team_id, user_id, workspace_id, task_type, model, provider, cost_usd,"
    " self_priced, adjustments, occurred_at"
)


def _scope_of(row: asyncpg.Record) -> Scope:
    return Scope(org_id=row["org_id"], team_id=row["team_id"], user_id=row["user_id"], workspace_id=row["workspace_id"])


async def recorded_costs(conn: Connection, task_id: UUID, attempt: int) -> list[RecordedCost]:
    """The recorded costs of one call of a task, oldest first, locked for an adjustment."""
    rows = await conn.fetch(
        f"SELECT {_RECORDED_COLUMNS} FROM recorded_costs WHERE task_id = $1 AND attempt = $2"
        " ORDER BY occurred_at, event_id FOR UPDATE",
        task_id,
        attempt,
    )
    return [
        RecordedCost(
            event_id=r["event_id"],
            task_id=r["task_id"],
            attempt=r["attempt"],
            scope=_scope_of(r),
            task_type=r["task_type"],
            model=r["model"],
            provider=r["provider"],
            cost_usd=r["cost_usd"],
            self_priced=r["self_priced"],
            adjustments=r["adjustments"],
            occurred_at=r["occurred_at"],
        )
        for r in rows
    ]


async def save_adjustment(conn: Connection, event: CostAdjusted) -> None:
    """The cost's new amount, the adjustment audited, and the estimate's error against the new cost."""
    await conn.execute(
        "UPDATE recorded_costs SET cost_usd = $2, adjustments = $3 WHERE event_id = $1",
        event.cost_event_id,
        event.cost_usd,
        event.sequence,
    )
    await conn.execute(
        """INSERT INTO cost_adjustments (id, cost_event_id, sequence, task_id, attempt, org_id, actor, reason,
               before_usd, after_usd, void, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
        event.event_id,
        event.cost_event_id,
        event.sequence,
        event.task_id,
        event.attempt,
        event.scope.org_id,
        event.actor,
        event.reason,
        event.previous_cost_usd,
        event.cost_usd,
        event.void,
        event.occurred_at,
    )
    await conn.execute(
        "UPDATE estimate_errors SET actual_cost_usd = $2 WHERE event_id = $1", event.cost_event_id, event.cost_usd
    )


async def adjustments(
    conn: Connection | asyncpg.Pool, task_id: UUID | None, within: Scope | None, limit: int
) -> list[CostAdjustment]:
    """The latest adjustments, newest first: of one task, or all, within a scope."""
    rows = await conn.fetch(
        """SELECT a.id, a.task_id, a.attempt, a.cost_event_id, a.sequence, a.before_usd, a.after_usd, a.void,
                  a.reason, a.actor, a.at, r.org_id, r.team_id, r.user_id, r.workspace_id, r.model, r.provider,
                  r.self_priced
           FROM cost_adjustments a JOIN recorded_costs r ON r.event_id = a.cost_event_id
           WHERE ($1::uuid IS NULL OR a.task_id = $1) AND ($2::text IS NULL OR r.org_id = $2)
             AND ($3::text IS NULL OR r.team_id = $3) AND ($4::text IS NULL OR r.user_id = $4)
             AND ($5::text IS NULL OR r.workspace_id = $5)
           ORDER BY a.at DESC, a.sequence DESC LIMIT $6""",
        task_id,
        within.org_id if within else None,
        within.team_id if within else None,
        within.user_id if within else None,
        within.workspace_id if within else None,
        limit,
    )
    return [
        CostAdjustment(
            adjustment_id=r["id"],
            task_id=r["task_id"],
            attempt=r["attempt"],
            cost_event_id=r["cost_event_id"],
            scope=_scope_of(r),
            model=r["model"],
            provider=r["provider"],
            sequence=r["sequence"],
            previous_cost_usd=r["before_usd"],
            cost_usd=r["after_usd"],
            delta_usd=r["after_usd"] - r["before_usd"],
            void=r["void"],
            self_priced=r["self_priced"],
            reason=r["reason"],
            actor=r["actor"],
            at=r["at"],
        )
        for r in rows
    ]


# --- decisions, for the check of reported costs ---------------------------------------------


async def keep_decision(conn: Connection, event: ModelSelected) -> None:
    """Remember a task's decision: its org and the models it may call (chosen, then fallbacks). A
    task decided again (in the same org) may call the models of either decision."""
    await conn.execute(
        """INSERT INTO decisions AS d (task_id, org_id, models, decided_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (task_id) DO UPDATE
           SET models = d.models || ARRAY(SELECT m FROM unnest(EXCLUDED.models) AS m WHERE m <> ALL(d.models)),
               decided_at = greatest(d.decided_at, EXCLUDED.decided_at)
           WHERE d.org_id = EXCLUDED.org_id""",
        event.task_id,
        event.scope.org_id,
        [event.model, *event.fallback_chain],
        event.occurred_at,
    )


async def decision(pool: asyncpg.Pool, task_id: UUID) -> Decision | None:
    row = await pool.fetchrow("SELECT org_id, models FROM decisions WHERE task_id = $1", task_id)
    return None if row is None else Decision(row["org_id"], tuple(row["models"]))
