"""budget-enforcer's bus adapters: CostRecorded adds to the org's running total."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from faststream.nats import NatsRouter

from shared.bus import reply
from shared.db import Connection
from shared.events import CostRecorded
from shared.requests import BudgetStatus, GetBudgetStatus
from shared.service import Runtime, ServiceSpec

NAME = "budget_enforcer"


def register(router: NatsRouter, rt: Runtime) -> None:
    subjects = rt.subjects

    async def on_cost_recorded(conn: Connection, event: CostRecorded) -> None:
        scope = event.scope
        await conn.execute(
            "INSERT INTO spend_ledger (event_id, task_id, org_id, team_id, user_id, workspace_id, model,"
            " cost_usd, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            event.event_id,
            event.task_id,
            scope.org_id,
            scope.team_id,
            scope.user_id,
            scope.workspace_id,
            event.model,
            event.cost_usd,
            event.occurred_at,
        )
        await conn.execute(
            "INSERT INTO org_spend (org_id, spent_usd, costs_recorded) VALUES ($1, $2, 1)"
            " ON CONFLICT (org_id) DO UPDATE SET spent_usd = org_spend.spent_usd + EXCLUDED.spent_usd,"
            " costs_recorded = org_spend.costs_recorded + 1, updated_at = now()",
            scope.org_id,
            event.cost_usd,
        )

    async def status(request: GetBudgetStatus) -> BudgetStatus:
        row = await rt.pool.fetchrow(
            "SELECT spent_usd, costs_recorded FROM org_spend WHERE org_id = $1", request.org_id
        )
        return BudgetStatus(
            org_id=request.org_id,
            spent_usd=row["spent_usd"] if row else Decimal(0),
            costs_recorded=row["costs_recorded"] if row else 0,
        )

    rt.consume_once(router, subjects.cost_recorded, CostRecorded, on_cost_recorded)
    reply(router, subjects.budget_status, NAME, GetBudgetStatus, status)


SPEC = ServiceSpec(name=NAME, migrations=Path(__file__).parent / "migrations", register=register)
