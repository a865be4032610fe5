"""Transactional outbox: events written with the state they describe, published after commit.

``enqueue`` inserts the event into the service's ``outbox`` table inside the caller's
transaction, together with the current trace context. ``OutboxRelay.flush`` publishes
pending rows (right after a commit, and on a timer for anything a crash left behind)
with ``Nats-Msg-Id`` = event_id, so a row published twice is still one event on the bus.
Replicas share the table safely: rows are claimed with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog
from faststream.nats import NatsBroker
from opentelemetry import context as otel_context
from opentelemetry import propagate

from shared.bus import msg_id_headers
from shared.db import Connection
from shared.events import Event
from shared.settings import Settings

log = structlog.get_logger(__name__)


async def enqueue(conn: Connection, subject: str, event: Event) -> None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    await conn.execute(
        "INSERT INTO outbox (event_id, subject, payload, headers) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (event_id) DO NOTHING",
        event.event_id,
        subject,
        event.model_dump_json().encode(),
        msg_id_headers(event, carrier),
    )


class OutboxRelay:
    def __init__(self, pool: asyncpg.Pool, broker: NatsBroker, settings: Settings, *, batch: int = 100):
        self._pool = pool
        self._broker = broker
        self._settings = settings
        self._batch = batch
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def flush(self) -> int:
        """Publish every pending row; returns how many were published."""
        published = 0
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    "SELECT id, subject, payload, headers FROM outbox WHERE published_at IS NULL"
                    " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                    self._batch,
                )
                for row in rows:
                    headers: dict[str, str] = row["headers"]
                    token = otel_context.attach(propagate.extract(headers))
                    try:
                        await self._broker.publish(
                            bytes(row["payload"]),
                            row["subject"],
                            headers=headers,
                            stream=self._settings.subjects.stream_for(row["subject"]).name,
                            timeout=self._settings.request_timeout,
                        )
                    finally:
                        otel_context.detach(token)
                if rows:
                    await conn.execute(
                        "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                        [r["id"] for r in rows],
                    )
            published += len(rows)
            if len(rows) < self._batch:
                return published

    def poke(self) -> None:
        """Ask the background loop to flush now (after a commit that enqueued events)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._settings.outbox_interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("outbox flush failed; will retry")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
