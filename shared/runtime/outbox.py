"""Transactional outbox: events written with the state they describe, published after commit.

``enqueue`` inserts the event into the service's ``outbox`` table inside the caller's
transaction, together with the current trace context. ``OutboxRelay.flush`` publishes
pending rows (right after a commit, and on a timer for anything a crash left behind)
with ``Nats-Msg-Id`` = event_id, so a row published twice is still one event on the bus.
Replicas share the table safely: rows are claimed with ``FOR UPDATE SKIP LOCKED``, a batch at a
time, and a row that fails to publish is retried later without blocking the others.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog
from faststream.nats import NatsBroker
from opentelemetry import context as otel_context
from opentelemetry import propagate

from routewise.client.wire import msg_id_headers
from routewise.contracts.events import Event
from routewise.runtime.db import Connection
from routewise.runtime.settings import Settings

log = structlog.get_logger(__name__)

FLUSH_BATCH = 32
"""Outbox rows claimed, published and marked per transaction."""


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
    def __init__(self, pool: asyncpg.Pool, broker: NatsBroker, settings: Settings):
        self._pool = pool
        self._broker = broker
        self._settings = settings
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def flush(self) -> int:
        """Publish every pending row, oldest first; returns how many were published.

        Rows are claimed ``FLUSH_BATCH`` at a time, published one after the other and marked in
        one statement, in one short transaction per batch; a row that cannot be published (its
        attempts and error are recorded) does not hold back the rest.
        """
        published, cursor = 0, 0
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    "SELECT id, subject, payload, headers FROM outbox WHERE published_at IS NULL AND id > $1"
                    " ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
                    cursor,
                    FLUSH_BATCH,
                )
                done: list[int] = []
                for row in rows:
                    try:
                        await self._publish(row["subject"], bytes(row["payload"]), row["headers"])
                    except Exception as exc:
                        log.warning("outbox row not published; will retry", outbox_id=row["id"], error=repr(exc))
                        await conn.execute(
                            "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                            row["id"],
                            repr(exc),
                        )
                    else:
                        done.append(row["id"])
                if done:
                    await conn.execute(
                        "UPDATE outbox SET published_at = now(), attempts = attempts + 1 WHERE id = ANY($1::bigint[])",
                        done,
                    )
            published += len(done)
            if len(rows) < FLUSH_BATCH:
                return published
            cursor = rows[-1]["id"]

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        token = otel_context.attach(propagate.extract(headers))  # continue the trace that wrote the row
        try:
            await self._broker.publish(
                payload,
                subject,
                headers=headers,
                stream=self._settings.subjects.stream_for(subject).name,
                timeout=self._settings.request_timeout,
            )
        finally:
            otel_context.detach(token)

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
