"""Budget invariants, property-tested against a real Postgres (each example in a fresh schema)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routewise.contracts.budget import CreateBudget, ReserveBudget, ThresholdSpec
from routewise.contracts.events import CostRecorded, Scope
from routewise.runtime.db import claim, create_pool, migrate, unit_of_work
from routewise.services.budget_enforcer import repository as repo
from routewise.services.budget_enforcer.app import SERVICE
from routewise.services.budget_enforcer.domain import DEFAULT_THRESHOLDS, in_force, percent_of
from tests.conftest import Database

PROPERTY = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(5), places=2)


@asynccontextmanager
async def budget_schema(database: Database) -> AsyncIterator[asyncpg.Pool]:
    schema = f"bp_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database.admin_dsn)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    pool = await create_pool(database.admin_dsn, schema, max_size=20)
    try:
        await migrate(pool, schema, SERVICE.migrations)
        yield pool
    finally:
        await pool.close()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


async def new_budget(
    pool: asyncpg.Pool,
    limit: Decimal,
    *,
    period: str = "monthly",
    tz: str = "UTC",
    thresholds: list[ThresholdSpec] | None = None,
    starts: datetime | None = None,
) -> uuid.UUID:
    async with unit_of_work(pool) as conn:
        budget = await repo.create_budget(
            conn,
            CreateBudget(
                name="b",
                scope_type="org",
                scope_id="acme",
                period=period,
                timezone=tz,
                limit_usd=limit,
                thresholds=thresholds,
                starts_at=starts,
                actor="test",
            ),
            datetime.now(UTC),
        )
    return budget.id


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())  # type: ignore[arg-type]


@PROPERTY
@given(limit=st.decimals(min_value=1, max_value=30, places=2), amounts=st.lists(money, min_size=1, max_size=80))
def test_concurrent_reservations_never_exceed_a_hard_limit_nor_refuse_what_fits(
    database: Database, limit: Decimal, amounts: list[Decimal]
) -> None:
    async def scenario() -> None:
        async with budget_schema(database) as pool:
            await new_budget(pool, limit, thresholds=[ThresholdSpec(percent=100, actions=["notify"])])

            async def one(amount: Decimal) -> bool:
                async with unit_of_work(pool) as conn:
                    result = await repo.reserve(
                        conn,
                        ReserveBudget(task_id=uuid.uuid4(), scope=Scope(org_id="acme"), amount_usd=amount, model="m"),
                        datetime.now(UTC),
                        timedelta(minutes=5),
                    )
                return result.admitted

            admitted = await asyncio.gather(*(one(a) for a in amounts))
            held = await pool.fetchval("SELECT coalesce(sum(reserved_usd), 0) FROM budget_periods")
        taken = sum((a for a, ok in zip(amounts, admitted, strict=True) if ok), Decimal(0))
        assert taken <= limit
        assert held == taken
        for amount, ok in zip(amounts, admitted, strict=True):
            if not ok:  # refused only if it could not fit, even at the end (holds only grow here)
                assert taken + amount > limit

    run(scenario)


def cost(amount: Decimal, at: datetime) -> CostRecorded:
    return CostRecorded(
        task_id=uuid.uuid4(),
        scope=Scope(org_id="acme"),
        model="m",
        provider="p",
        input_tokens=1,
        output_tokens=1,
        cost_usd=amount,
        occurred_at=at,
    )


async def apply_once(pool: asyncpg.Pool, event: CostRecorded) -> int:
    """What the service's consumer does: inbox claim and settlement in one transaction."""
    async with unit_of_work(pool) as conn:
        if not await claim(conn, event.event_id, "costs"):
            return 0
        return len(await repo.settle(conn, event))


NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
days_back = st.integers(min_value=0, max_value=9)


@PROPERTY
@given(costs=st.lists(st.tuples(money, days_back), min_size=1, max_size=40), seed=st.integers(0, 1000))
def test_replaying_every_cost_twice_changes_nothing_and_each_threshold_alerts_once_per_period(
    database: Database, costs: list[tuple[Decimal, int]], seed: int
) -> None:
    async def scenario() -> None:
        async with budget_schema(database) as pool:
            limit = Decimal(4)
            await new_budget(pool, limit, period="daily", tz="Europe/Paris", starts=NOW - timedelta(days=30))
            events = [cost(a, NOW - timedelta(days=d, hours=d * 5 % 24)) for a, d in costs]
            alerts = [await apply_once(pool, e) for e in events]
            first = await pool.fetch("SELECT period_start, spent_usd FROM budget_periods ORDER BY period_start")
            replay = list(events)
            random.Random(seed).shuffle(replay)
            again = [await apply_once(pool, e) for e in replay]
            second = await pool.fetch("SELECT period_start, spent_usd FROM budget_periods ORDER BY period_start")
            fired = await pool.fetch("SELECT period_start, threshold FROM alerts_fired")
        assert second == first
        assert sum(again) == 0
        assert sum(alerts) == len(fired)
        pairs = [(r["period_start"], r["threshold"]) for r in fired]
        assert len(pairs) == len(set(pairs))  # at most once per (period, threshold)
        for row in first:  # and exactly the thresholds each period's spend reached
            reached = {t.percent for t in in_force(DEFAULT_THRESHOLDS, percent_of(row["spent_usd"], limit))}
            assert {t for p, t in pairs if p == row["period_start"]} == reached
        assert sum(r["spent_usd"] for r in first) == sum(a for a, _ in costs)

    run(scenario)
