"""selector's tables: policies and the task-type map, tier preferences, decisions, the prompt
features kept for learning, and the text learner's weights."""

from __future__ import annotations

from typing import NamedTuple
from uuid import UUID

import asyncpg
from opentelemetry import propagate

from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import ModelSelected, TaskArrived, TaskRejected
from routewise.contracts.routing import RoutingPolicy, SetPolicy, TierPreferences
from routewise.contracts.vocabulary import ErrorCode
from routewise.runtime.db import Connection
from routewise.services.selector.domain import Policy
from routewise.services.selector.learner import TextModel, Update

DEFAULT_POLICY = "normal"


def _policy(row: asyncpg.Record) -> RoutingPolicy:
    return RoutingPolicy(
        name=row["name"],
        description=row["description"],
        models=row["models"],
        max_cost_per_task_usd=row["max_cost_per_task_usd"],
        max_tokens=row["max_tokens"],
        task_types=sorted(row["task_types"] or []),
        updated_by=row["updated_by"],
        updated_at=row["updated_at"],
    )


_POLICIES = """SELECT p.*, array_remove(array_agg(t.task_type), NULL) AS task_types
               FROM routing_policies p LEFT JOIN task_type_policies t ON t.policy = p.name"""


async def list_policies(conn: Connection) -> list[RoutingPolicy]:
    rows = await conn.fetch(f"{_POLICIES} GROUP BY p.name ORDER BY p.name")
    return [_policy(r) for r in rows]


async def set_policy(conn: Connection, req: SetPolicy) -> RoutingPolicy:
    await conn.execute(
        """INSERT INTO routing_policies (name, description, models, max_cost_per_task_usd, max_tokens, updated_by)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description, models = EXCLUDED.models,
               max_cost_per_task_usd = EXCLUDED.max_cost_per_task_usd, max_tokens = EXCLUDED.max_tokens,
               updated_by = EXCLUDED.updated_by, updated_at = now()""",
        req.name,
        req.description,
        req.models,
        req.max_cost_per_task_usd,
        req.max_tokens,
        req.actor,
    )
    if req.task_types is not None:
        await conn.execute("DELETE FROM task_type_policies WHERE policy = $1", req.name)
        await conn.execute(
            """INSERT INTO task_type_policies (task_type, policy) SELECT unnest($1::text[]), $2
               ON CONFLICT (task_type) DO UPDATE SET policy = EXCLUDED.policy""",
            req.task_types,
            req.name,
        )
    row = await conn.fetchrow(f"{_POLICIES} WHERE p.name = $1 GROUP BY p.name", req.name)
    assert row is not None
    return _policy(row)


async def policy_for(conn: Connection, task_type: str, name: str | None) -> Policy:
    """The task's named policy, else its task type's, else ``normal``."""
    row = await conn.fetchrow(
        """SELECT p.name, p.models, p.max_cost_per_task_usd, p.max_tokens FROM routing_policies p
           WHERE p.name = coalesce($1, (SELECT policy FROM task_type_policies WHERE task_type = $2), $3)""",
        name,
        task_type,
        DEFAULT_POLICY,
    )
    if row is None:
        raise RoutewiseError(f"no routing policy is named {name or DEFAULT_POLICY!r}", code=ErrorCode.unknown_policy)
    return Policy(row["name"], tuple(row["models"]), row["max_cost_per_task_usd"], row["max_tokens"])


async def preferences(conn: Connection, workspace_id: str | None) -> TierPreferences | None:
    if workspace_id is None:
        return None
    row = await conn.fetchrow("SELECT * FROM tier_preferences WHERE workspace_id = $1", workspace_id)
    if row is None:
        return None
    return TierPreferences.model_validate(
        {**row["preferences"], "updated_by": row["updated_by"], "updated_at": row["updated_at"]}
    )


async def set_preferences(conn: Connection, prefs: TierPreferences, actor: str) -> TierPreferences:
    body = prefs.model_dump(mode="json", exclude={"updated_by", "updated_at"})
    await conn.execute(
        """INSERT INTO tier_preferences (workspace_id, preferences, updated_by) VALUES ($1, $2, $3)
           ON CONFLICT (workspace_id) DO UPDATE SET preferences = EXCLUDED.preferences,
               updated_by = EXCLUDED.updated_by, updated_at = now()""",
        prefs.workspace_id,
        body,
        actor,
    )
    stored = await preferences(conn, prefs.workspace_id)
    assert stored is not None
    return stored


async def delete_preferences(conn: Connection, workspace_id: str) -> bool:
    deleted: int | None = await conn.fetchval(
        "DELETE FROM tier_preferences WHERE workspace_id = $1 RETURNING 1", workspace_id
    )
    return deleted == 1


async def record_decision(
    conn: Connection,
    task: TaskArrived,
    outcome: ModelSelected | TaskRejected,
    learning: tuple[str, float, list[int]] | None,
) -> bool:
    """Keep the decision (a rejected task may be decided again) and, for a selection, the prompt
    features the learner needs when feedback comes. False when the task was already selected."""
    selected = isinstance(outcome, ModelSelected)
    columns: tuple[object, ...] = (
        (outcome.model, outcome.provider, outcome.tier.value, outcome.estimated_cost_usd, None)
        if isinstance(outcome, ModelSelected)
        else (None, None, None, None, outcome.reason.value)
    )
    trace_context: dict[str, str] = {}
    propagate.inject(trace_context)  # the decision span's context, for the task's later cost
    inserted = await conn.fetchval(
        """INSERT INTO decisions (task_id, arrived_event_id, status, org_id, scope, task_type, model,
               provider, tier, estimated_cost_usd, reason, outcome_event, trace_context)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
           ON CONFLICT (task_id) DO UPDATE SET arrived_event_id = EXCLUDED.arrived_event_id,
               status = EXCLUDED.status, model = EXCLUDED.model, provider = EXCLUDED.provider,
               tier = EXCLUDED.tier, estimated_cost_usd = EXCLUDED.estimated_cost_usd,
               reason = EXCLUDED.reason, outcome_event = EXCLUDED.outcome_event,
               trace_context = EXCLUDED.trace_context, decided_at = now()
           WHERE decisions.status = 'rejected'
           RETURNING 1""",
        task.task_id,
        task.event_id,
        "selected" if selected else "rejected",
        task.scope.org_id,
        task.scope.model_dump(mode="json"),
        task.task_type,
        *columns,
        outcome.model_dump(mode="json"),
        trace_context,
    )
    if inserted and selected and learning is not None:
        pattern, complexity, features = learning
        await conn.execute(
            """INSERT INTO task_features (task_id, task_type, pattern, complexity, features)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (task_id) DO NOTHING""",
            task.task_id,
            task.task_type,
            pattern,
            complexity,
            features,
        )
    return bool(inserted)


class Seen(NamedTuple):
    """What the selector already did with a TaskArrived: applied this very event, and the task's
    current decision status (``selected``, ``rejected`` or None)."""

    applied: bool
    previous: str | None


async def seen(conn: Connection, event_id: UUID, task_id: UUID) -> Seen:
    row = await conn.fetchrow(
        """SELECT EXISTS (SELECT 1 FROM inbox WHERE event_id = $1) AS applied,
                  (SELECT status FROM decisions WHERE task_id = $2) AS previous""",
        event_id,
        task_id,
    )
    assert row is not None
    return Seen(row["applied"], row["previous"])


async def decision(conn: Connection, task_id: UUID) -> asyncpg.Record | None:
    """The task's decision row (None: the selector never decided it)."""
    return await conn.fetchrow("SELECT * FROM decisions WHERE task_id = $1", task_id)


async def task_features(conn: Connection, task_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM task_features WHERE task_id = $1", task_id)


async def lock_text_model(conn: Connection, model: str) -> TextModel:
    """The model's bias row, locked until the transaction ends (one update of a model at a time)."""
    await conn.execute("INSERT INTO learner_models (model) VALUES ($1) ON CONFLICT DO NOTHING", model)
    row = await conn.fetchrow("SELECT * FROM learner_models WHERE model = $1 FOR UPDATE", model)
    assert row is not None
    return TextModel(row["bias"], row["bias_g"], row["examples"], row["version"])


async def weights_of(conn: Connection, model: str, features: list[int]) -> dict[int, tuple[float, float]]:
    rows = await conn.fetch(
        "SELECT feature, w, g FROM learner_weights WHERE model = $1 AND feature = ANY($2::bigint[])", model, features
    )
    return {r["feature"]: (r["w"], r["g"]) for r in rows}


async def save_update(conn: Connection, model: str, version: int, update: Update) -> None:
    features = list(update.weights)
    await conn.execute(
        """INSERT INTO learner_weights (model, feature, w, g, version)
           SELECT $1, f, w, g, $5 FROM unnest($2::bigint[], $3::float8[], $4::float8[]) AS u(f, w, g)
           ON CONFLICT (model, feature) DO UPDATE SET w = EXCLUDED.w, g = EXCLUDED.g, version = EXCLUDED.version""",
        model,
        features,
        [update.weights[f][0] for f in features],
        [update.weights[f][1] for f in features],
        version,
    )
    await conn.execute(
        "UPDATE learner_models SET bias = $2, bias_g = $3, examples = examples + 1, version = $4 WHERE model = $1",
        model,
        update.bias,
        update.bias_g,
        version,
    )


async def text_model_versions(conn: Connection) -> dict[str, tuple[float, int, int]]:
    """Every model's (bias, examples, version)."""
    rows = await conn.fetch("SELECT model, bias, examples, version FROM learner_models")
    return {r["model"]: (r["bias"], r["examples"], r["version"]) for r in rows}


async def weights_since(conn: Connection, model: str, version: int) -> list[tuple[int, float]]:
    rows = await conn.fetch("SELECT feature, w FROM learner_weights WHERE model = $1 AND version > $2", model, version)
    return [(r["feature"], r["w"]) for r in rows]
