"""Retention of the per-event tables every service has: the inbox (ids of applied events) and
the outbox (published events), and the per-task working data a service declares. Pruned in
batches of a transaction each, so a prune never holds locks for long.

An inbox row must outlive every way its event can come again: JetStream redelivers an unacked
message within ``max_deliver`` deliveries and their backoff (about a minute by default) and drops a republished
event id within its 24 h duplicate window; ``inbox_retention_days`` (default 7) is well past
both. An unpublished outbox row is never pruned. The streams keep events (their consumers ack
them long before); a durable consumer deleted and created again would be replayed the events
older than the inbox remembers: recreate consumers from the stream's current end
(``DeliverPolicy.NEW``), never from its start.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import asyncpg
import structlog

from routewise.runtime.settings import Settings

log = structlog.get_logger(__name__)
BATCH = 5_000


async def prune_older(pool: asyncpg.Pool, table: str, column: str, before: datetime) -> int:
    """Delete rows of ``table`` whose ``column`` is before ``before``, a batch per transaction (each
    batch commits and releases its locks before the next); returns how many."""
    deleted = 0
    while True:
        status = await pool.execute(
            f"DELETE FROM {table} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {table} WHERE {column} < $1 LIMIT {BATCH}))",
            before,
        )
        count = int(status.split()[-1])
        deleted += count
        if count < BATCH:
            return deleted


async def prune(
    pool: asyncpg.Pool, now: datetime, settings: Settings, per_task: Mapping[str, str] | None = None
) -> dict[str, int]:
    """The inbox and the (published) outbox past their retention, and ``per_task`` ({table: time
    column}) past ``task_retention_days``; returns how many rows each lost."""
    s = settings
    cutoffs = {
        ("inbox", "applied_at"): now - timedelta(days=s.inbox_retention_days),
        ("outbox", "published_at"): now - timedelta(days=s.outbox_retention_days),
    }
    for table, column in (per_task or {}).items():
        cutoffs[(table, column)] = now - timedelta(days=s.task_retention_days)
    pruned = {table: await prune_older(pool, table, column, before) for (table, column), before in cutoffs.items()}
    if any(pruned.values()):
        log.info("pruned", **pruned)
    return pruned
