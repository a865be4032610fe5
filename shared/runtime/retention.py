"""Retention of the per-event tables every service has: the inbox (ids of applied events) and
the outbox (published events). Pruned in small batches so a prune never holds long locks.

An inbox row must outlive every way its event can come again: JetStream redelivers an unacked
message within ``max_deliver`` deliveries and their backoff (about a minute by default) and drops a republished
event id within its 24 h duplicate window; ``inbox_retention_days`` (default 7) is well past
both. An unpublished outbox row is never pruned.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog

from routewise.runtime.db import Connection

log = structlog.get_logger(__name__)
BATCH = 5_000


async def prune_older(conn: Connection, table: str, column: str, before: datetime) -> int:
    """Delete rows of ``table`` whose ``column`` is before ``before``, in batches; returns how many."""
    deleted = 0
    while True:
        status = await conn.execute(
            f"DELETE FROM {table} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {table} WHERE {column} < $1 LIMIT {BATCH}))",
            before,
        )
        count = int(status.split()[-1])
        deleted += count
        if count < BATCH:
            return deleted


async def prune_inbox_outbox(conn: Connection, now: datetime, inbox_days: float, outbox_days: float) -> dict[str, int]:
    pruned = {
        "inbox": await prune_older(conn, "inbox", "applied_at", now - timedelta(days=inbox_days)),
        "outbox": await prune_older(conn, "outbox", "published_at", now - timedelta(days=outbox_days)),
    }
    if any(pruned.values()):
        log.info("pruned", **pruned)
    return pruned
