"""What every consumer of CostAdjusted shares: a cost's adjustments apply in their order, after the
cost, whatever order the bus delivers them in.

Each consumer counts, per recorded cost, how many of its adjustments it applied. An adjustment
that comes before its cost, or before the adjustment preceding it (a redelivery overtook them), is
*parked*: applied like any event (its id claimed in the inbox), kept in the service's
``parked_adjustments`` table (each service's migrations create it), and takes effect when what it
follows has — the cost's handler and the adjustment's both call ``drain`` after applying theirs.
Both take the same transaction-scoped lock on the cost first, so an adjustment parked by one
replica while another applies the cost cannot be left behind.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

from routewise.contracts.events import CostAdjusted
from routewise.runtime.db import Connection

T = TypeVar("T")


async def lock(conn: Connection, cost_event_id: UUID) -> None:
    """Serialise, per recorded cost, its handler and its adjustments' (until the transaction ends),
    within this service: the lock is named by its schema too (advisory locks are the database's,
    and another service's batch taking the same costs in another order must not deadlock with it)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':adjustments:' || $1, 0))",
        str(cost_event_id),
    )


async def in_order(
    conn: Connection,
    event: CostAdjusted,
    applied: int | None,
    apply: Callable[[CostAdjusted], Awaitable[T]],
) -> list[T]:
    """Apply ``event`` now when its cost is here and ``applied`` (how many of the cost's adjustments
    were, None: the cost was not) is its sequence - 1, then the parked ones that follow; park it
    when it is early; nothing when it was applied already. Call under ``lock``. Returns what each
    ``apply`` returned."""
    if applied is None or applied < event.sequence - 1:
        await conn.execute(
            """INSERT INTO parked_adjustments (event_id, cost_event_id, sequence, payload) VALUES ($1, $2, $3, $4)
               ON CONFLICT (event_id) DO NOTHING""",
            event.event_id,
            event.cost_event_id,
            event.sequence,
            event.model_dump(mode="json"),
        )
        return []
    if applied >= event.sequence:
        return []
    return [await apply(event), *await drain(conn, event.cost_event_id, event.sequence, apply)]


async def drain(
    conn: Connection, cost_event_id: UUID, applied: int, apply: Callable[[CostAdjusted], Awaitable[T]]
) -> list[T]:
    """Apply the parked adjustments of a cost that now follow (``applied`` of them are applied)."""
    out: list[T] = []
    while True:
        payload = await conn.fetchval(
            "DELETE FROM parked_adjustments WHERE cost_event_id = $1 AND sequence = $2 RETURNING payload",
            cost_event_id,
            applied + 1,
        )
        if payload is None:
            return out
        out.append(await apply(CostAdjusted.model_validate(payload)))
        applied += 1
