"""Races between reservations, settlement, release and expiry, on a real Postgres: no deadlock,
no lost or double-released hold, no reset of a budget in use."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from routewise.contracts.budget import CreateBudget, ReserveBudget, ThresholdSpec, UpdateBudget
from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import CostRecorded, Scope
from routewise.runtime.db import unit_of_work
from routewise.services.budget_enforcer import repository as repo
from tests.conftest import Database
from tests.integration.test_budget_properties import budget_schema

ONLY_LIMIT = [ThresholdSpec(percent=100, actions=["notify"])]
CHAIN = Scope(org_id="o", team_id="t", user_id="u")


async def budget(
    pool: asyncpg.Pool, scope_type: str, scope_id: str, limit: str = "1000", **fields: object
) -> uuid.UUID:
    async with unit_of_work(pool) as conn:
        created = await repo.create_budget(
            conn,
            CreateBudget(
                name=scope_id,
                scope_type=scope_type,
                scope_id=scope_id,
                period=fields.get("period", "monthly"),
                timezone=fields.get("tz", "UTC"),
                limit_usd=Decimal(limit),
                thresholds=ONLY_LIMIT,
                actor="t",
                starts_at=datetime(2020, 1, 1, tzinfo=UTC),
            ),
            datetime.now(UTC),
        )  # type: ignore[arg-type]
    return created.id


async def reserve(pool: asyncpg.Pool, task: uuid.UUID, scope: Scope, amount: str, ttl_s: float = 300):
    async with unit_of_work(pool) as conn:
        return await repo.reserve(
            conn,
            ReserveBudget(task_id=task, scope=scope, amount_usd=Decimal(amount), model="m"),
            datetime.now(UTC),
            timedelta(seconds=ttl_s),
        )


async def test_settle_release_expire_and_reserve_racing_never_deadlock(database: Database) -> None:
    async with budget_schema(database) as pool:
        for kind, ident in (("org", "o"), ("team", "o/t"), ("user", "o/u")):
            await budget(pool, kind, ident)
        tasks = [uuid.uuid4() for _ in range(60)]
        for task in tasks:
            await reserve(pool, task, CHAIN, "1", ttl_s=0.01 if random.random() < 0.5 else 300)
        await asyncio.sleep(0.05)
        rng = random.Random(4)

        async def settle(task: uuid.UUID) -> None:
            event = CostRecorded(
                task_id=task,
                scope=CHAIN,
                model="m",
                provider="p",
                input_tokens=1,
                output_tokens=1,
                cost_usd=Decimal("0.5"),
            )
            async with unit_of_work(pool) as conn:
                await repo.settle(conn, event)

        async def release(task: uuid.UUID) -> None:
            async with unit_of_work(pool) as conn:
                await repo.close_reservation(conn, task, "released")

        async def expire(task: uuid.UUID) -> None:
            async with unit_of_work(pool) as conn:
                await repo.close_reservation(conn, task, "expired", expired_before=datetime.now(UTC))

        work = []
        for task in tasks:
            work += [settle(task), release(task), expire(task), reserve(pool, uuid.uuid4(), CHAIN, "0.1")]
        rng.shuffle(work)
        results = await asyncio.gather(*work, return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []  # no deadlock, no unique violation
        held = await pool.fetchval("SELECT sum(reserved_usd) FROM budget_periods")
        open_holds = await pool.fetchval(
            "SELECT coalesce(sum(h.amount_usd), 0) FROM reservation_holds h JOIN reservations r USING (task_id)"
            " WHERE r.status = 'held'"
        )
        spent = await pool.fetchval("SELECT sum(spent_usd) FROM budget_periods")
    assert held == open_holds  # every hold given back exactly once
    assert spent == Decimal("0.5") * 60 * 3  # each settle charged all three budgets


async def test_concurrent_reserves_of_one_task_get_one_reservation(database: Database) -> None:
    async with budget_schema(database) as pool:
        task = uuid.uuid4()
        answers = await asyncio.gather(*(reserve(pool, task, Scope(org_id="nobody"), "1") for _ in range(8)))
    assert all(a.admitted for a in answers)
    assert len({a.reservation_id for a in answers}) == 1


async def test_the_time_zone_of_a_budget_in_use_cannot_change(database: Database) -> None:
    async with budget_schema(database) as pool:
        budget_id = await budget(pool, "org", "o", "10", period="daily")
        assert (await reserve(pool, uuid.uuid4(), Scope(org_id="o"), "9")).admitted
        with pytest.raises(RoutewiseError, match="cannot change"):
            async with unit_of_work(pool) as conn:
                await repo.update_budget(
                    conn, UpdateBudget(budget_id=budget_id, actor="t", timezone="Pacific/Pago_Pago")
                )
        assert not (await reserve(pool, uuid.uuid4(), Scope(org_id="o"), "9")).admitted  # still the same day's $10


async def test_an_expired_hold_is_not_returned_as_held_even_before_the_sweeper_runs(database: Database) -> None:
    async with budget_schema(database) as pool:
        await budget(pool, "org", "o", "10")
        task = uuid.uuid4()
        first = await reserve(pool, task, Scope(org_id="o"), "9", ttl_s=0.01)
        await asyncio.sleep(0.05)
        again = await reserve(pool, task, Scope(org_id="o"), "9")
        held = await pool.fetchval("SELECT sum(reserved_usd) FROM budget_periods")
    assert again.admitted
    assert again.reservation_id != first.reservation_id  # a fresh hold, the expired one given back
    assert held == Decimal(9)
