"""Bookkeeping consumers apply their events a batch at a time (one inbox statement, one commit per
batch): a batch that fails half-way, or is delivered again after it committed, still applies each
event exactly once. Real NATS and Postgres; metrics' ledger (where every cost adds to its task's
``cost_events`` and ``actual_cost_usd``) is the witness."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import asyncpg
import nats
import pytest

from routewise.client import RoutewiseClient
from routewise.contracts.events import CostRecorded, Scope
from routewise.runtime.inprocess import System
from routewise.runtime.service import apply_batch
from routewise.services.metrics import handlers as metrics
from routewise.services.metrics import repository as metrics_repo
from tests.helpers import a_cost, eventually

COST = Decimal("0.001")


def costs(org: str, n: int) -> list[CostRecorded]:
    return [a_cost(Scope(org_id=org), str(COST), task_id=uuid.uuid4()) for _ in range(n)]


async def ledger(system: System, org: str) -> list[tuple[int, Decimal]]:
    """(cost_events, actual_cost_usd) of each of the org's tasks."""
    conn = await asyncpg.connect(system.dsns["metrics"])
    try:
        rows = await conn.fetch(
            "SELECT cost_events, actual_cost_usd FROM metrics.task_ledger WHERE org_id = $1 ORDER BY task_id", org
        )
    finally:
        await conn.close()
    return [(r["cost_events"], r["actual_cost_usd"]) for r in rows]


async def test_a_batch_that_crashes_half_way_or_comes_again_after_its_commit_is_applied_once(system: System) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    deps = system.deps("metrics")
    events = costs(org, 8)
    crashed: list[uuid.UUID] = []

    async def dies_at_the_fourth(event: CostRecorded, uow: object, d: object) -> None:
        await metrics.cost_recorded(event, uow, d)  # type: ignore[arg-type]
        if event.event_id == events[3].event_id:
            crashed.append(event.event_id)
            raise ConnectionResetError("the process died half-way through the batch")

    with pytest.raises(ConnectionResetError):
        await apply_batch(dies_at_the_fourth, events[:6], deps)
    assert crashed and await ledger(system, org) == []  # the three applied before it went with it

    assert await apply_batch(metrics.cost_recorded, events[:6], deps) == 6  # the redelivery
    # committed, then the process died before its ack: the batch comes again, with newer events
    assert await apply_batch(metrics.cost_recorded, events[3:] + events[:2], deps) == 2
    assert await ledger(system, org) == [(1, COST)] * 8


async def test_over_the_bus_a_failing_event_is_retried_alone_and_duplicates_change_nothing(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    events = costs(org, 12)
    poisoned, attempts, transactions = events[5].event_id, [0], []
    record = metrics_repo.record_cost

    async def fails_twice(conn: asyncpg.Connection, event: CostRecorded) -> None:
        await record(conn, event)
        transactions.append(await conn.fetchval("SELECT txid_current()"))
        if event.event_id == poisoned and attempts[0] < 2:  # in its batch, then alone: then redelivered
            attempts[0] += 1
            raise ConnectionResetError("Postgres went away")

    monkeypatch.setattr(metrics_repo, "record_cost", fails_twice)
    settings = system.settings
    async with RoutewiseClient(settings) as rw:
        for event in events:
            await rw.publish(rw.subjects.event(event), event)
    # the same events again under other message ids (JetStream's own de-duplication does not see them)
    nc = await nats.connect(settings.nats_url)
    try:
        for event in events[:4]:
            subject = settings.subjects.event(event)
            await nc.jetstream().publish(
                subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": f"again-{event.event_id}"}
            )
    finally:
        await nc.close()

    async def all_applied() -> list[tuple[int, Decimal]] | None:
        rows = await ledger(system, org)
        return rows if len(rows) == 12 else None

    assert await eventually(all_applied, timeout=20) == [(1, COST)] * 12
    assert attempts == [2]  # failed in its batch and alone, applied on its redelivery
    assert len(set(transactions)) < len(transactions)  # batches: several events to a transaction
    await asyncio.sleep(1.0)  # anything still on its way would show now
    assert await ledger(system, org) == [(1, COST)] * 12
