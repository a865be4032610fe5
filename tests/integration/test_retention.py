"""The inbox and outbox every service has are pruned past their retention, never an unpublished row."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from routewise.runtime.inprocess import System
from routewise.runtime.retention import prune
from routewise.runtime.settings import Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)


async def test_old_inbox_ids_and_published_outbox_rows_go_unpublished_ones_stay(
    service_pool: Callable[[str], Awaitable[asyncpg.Pool]], settings: Settings
) -> None:
    pool = await service_pool("metrics")
    old, recent = NOW - timedelta(days=8), NOW - timedelta(days=1)
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE inbox, outbox")
        await conn.executemany(
            "INSERT INTO inbox (event_id, subject, applied_at) VALUES ($1, 's', $2)",
            [(uuid.uuid4(), old) for _ in range(6)] + [(uuid.uuid4(), recent)],
        )
        await conn.executemany(
            "INSERT INTO outbox (event_id, subject, payload, created_at, published_at) VALUES ($1, 's', '', $2, $3)",
            [(uuid.uuid4(), old, old), (uuid.uuid4(), old, None), (uuid.uuid4(), recent, recent)],
        )

        week = settings.model_copy(update={"inbox_retention_days": 7, "outbox_retention_days": 7})
        pruned = await prune(pool, NOW, week)

        assert pruned == {"inbox": 6, "outbox": 1}
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 1
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 1
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 2


async def test_each_service_prunes_its_per_task_working_data_past_task_retention(
    system: System, admin: asyncpg.Connection
) -> None:
    old, recent = datetime.now(UTC) - timedelta(days=31), datetime.now(UTC) - timedelta(days=1)
    tasks = {when: uuid.uuid4() for when in (old, recent)}
    for when, task in tasks.items():
        await admin.execute(
            "INSERT INTO selector.task_features (task_id, task_type, pattern, complexity, features, created_at)"
            " VALUES ($1, 'normal', 'factual', 0.1, '{1,2}', $2)",
            task,
            when,
        )
        await admin.execute(
            "INSERT INTO cost_predictor.estimates (task_id, task_type, predictions, created_at)"
            " VALUES ($1, 'normal', '{}', $2)",
            task,
            when,
        )
        await admin.execute(
            "INSERT INTO performance_tracker.outcomes (task_id, model, task_type, pattern, occurred_at)"
            " VALUES ($1, 'm', 'normal', 'factual', $2)",
            task,
            when,
        )

    pruned = {name: await rts[0].prune(system.deps(name)) for name, rts in system.runtimes.items()}

    assert pruned["selector"]["task_features"] >= 1
    assert pruned["cost_predictor"]["estimates"] >= 1
    assert pruned["performance_tracker"]["outcomes"] >= 1
    for table in ("selector.task_features", "cost_predictor.estimates", "performance_tracker.outcomes"):
        left = {r["task_id"] for r in await admin.fetch(f"SELECT task_id FROM {table}")}
        assert tasks[recent] in left and tasks[old] not in left, table
