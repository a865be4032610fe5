"""The inbox and outbox every service has are pruned past their retention, never an unpublished row."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from routewise.runtime.retention import prune_inbox_outbox

NOW = datetime(2026, 6, 1, tzinfo=UTC)


async def test_old_inbox_ids_and_published_outbox_rows_go_unpublished_ones_stay(
    service_pool: Callable[[str], Awaitable[asyncpg.Pool]],
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

        pruned = await prune_inbox_outbox(conn, NOW, inbox_days=7, outbox_days=7)

        assert pruned == {"inbox": 6, "outbox": 1}
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 1
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 1
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 2
