"""Migration 0004 of budget-enforcer: existing team/user budgets and spend become org-qualified."""

from __future__ import annotations

import shutil
import uuid
from decimal import Decimal
from pathlib import Path

import asyncpg

from routewise.runtime.db import create_pool, migrate
from routewise.services.budget_enforcer.app import SERVICE
from tests.conftest import Database

PERIOD = "2026-12-01T00:00:00+00:00"


async def old_data(conn: asyncpg.Connection) -> dict[str, uuid.UUID]:
    """What 0001 to 0003 left: a team budget charged by two orgs' teams of the same name, a user
    budget never charged, an org budget; spend per unqualified team."""
    ids = {name: uuid.uuid4() for name in ("team", "user", "org")}
    for name, kind, scope_id in (("team", "team", "platform"), ("user", "user", "ana"), ("org", "org", "a")):
        await conn.execute(
            """INSERT INTO budgets (id, name, scope_type, scope_id, period, timezone, starts_at, limit_usd, hard,
                   thresholds) VALUES ($1, $2, $3, $4, 'monthly', 'UTC', '2026-01-01', 10, true, '[]')""",
            ids[name],
            name,
            kind,
            scope_id,
        )
    costs = [("a", "1.5"), ("b", "2"), ("b", "0.25")]
    for org, amount in costs:
        event = uuid.uuid4()
        await conn.execute(
            """INSERT INTO spend_ledger (event_id, task_id, org_id, team_id, model, cost_usd, occurred_at)
               VALUES ($1, $2, $3, 'platform', 'm', $4, $5::text::timestamptz)""",
            event,
            uuid.uuid4(),
            org,
            Decimal(amount),
            PERIOD,
        )
        await conn.execute(
            "INSERT INTO budget_charges VALUES ($1, $2, $3::text::timestamptz, $4)",
            event,
            ids["team"],
            PERIOD,
            Decimal(amount),
        )
    await conn.execute(
        "INSERT INTO budget_periods (budget_id, period_start, spent_usd, reserved_usd, costs_recorded)"
        " VALUES ($1, $2::text::timestamptz, 3.75, 0.5, 3)",
        ids["team"],
        PERIOD,
    )
    await conn.execute(
        "INSERT INTO scope_spend VALUES ('team', 'platform', 3.75, 3), ('org', 'a', 1.5, 1), ('org', 'b', 2.25, 2)"
    )
    return ids


async def test_team_and_user_budgets_and_spend_are_named_within_their_orgs(database: Database, tmp_path: Path) -> None:
    schema = f"sm_{uuid.uuid4().hex[:10]}"
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(SERVICE.migrations.glob("*.sql"))[:3]:  # the schema as 0003 left it
        shutil.copy(path, before)
    admin = await asyncpg.connect(database.admin_dsn)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    pool = await create_pool(database.admin_dsn, schema, max_size=2)
    try:
        await migrate(pool, schema, before)
        async with pool.acquire() as conn:
            ids = await old_data(conn)
            assert f"{schema}/0004_org_qualified_scopes" in await migrate(pool, schema, SERVICE.migrations)
            budgets = {
                (r["scope_type"], r["scope_id"]): r
                for r in await conn.fetch(
                    "SELECT b.id, b.scope_type, b.scope_id, p.spent_usd, p.costs_recorded, p.reserved_usd"
                    " FROM budgets b LEFT JOIN budget_periods p ON p.budget_id = b.id"
                )
            }
            spend = {
                (r["scope_type"], r["scope_id"]): (r["spent_usd"], r["costs_recorded"])
                for r in await conn.fetch("SELECT * FROM scope_spend")
            }
            audited = await conn.fetchval("SELECT count(*) FROM budget_audit WHERE action = 'qualify_scope'")
    finally:
        await pool.close()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()

    assert sorted(budgets) == [
        ("org", "a"),
        ("team", "a/platform"),
        ("team", "b/platform"),
        ("user", "a/ana"),
        ("user", "b/ana"),
    ]
    a_team, b_team = budgets[("team", "a/platform")], budgets[("team", "b/platform")]
    assert a_team["id"] == ids["team"] and budgets[("user", "a/ana")]["id"] == ids["user"]  # the first org keeps the id
    assert (a_team["spent_usd"], a_team["costs_recorded"], a_team["reserved_usd"]) == (
        Decimal("1.5"),
        1,
        Decimal("0.5"),
    )
    assert (b_team["spent_usd"], b_team["costs_recorded"], b_team["reserved_usd"]) == (Decimal("2.25"), 2, 0)
    assert spend == {
        ("org", "a"): (Decimal("1.5"), 1),
        ("org", "b"): (Decimal("2.25"), 2),
        ("team", "a/platform"): (Decimal("1.5"), 1),
        ("team", "b/platform"): (Decimal("2.25"), 2),
    }
    assert audited == 4
