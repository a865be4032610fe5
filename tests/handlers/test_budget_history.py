"""budget-enforcer's history, called directly: the alerts budgets fired and the audit log, each
filtered by org and scope (what the gateway's management API asks for a key)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from routewise.contracts.budget import (
    ApproveTask,
    CreateBudget,
    DeleteBudget,
    ExtendBudget,
    ListAlerts,
    ListBudgetAudit,
    ListBudgets,
    UpdateBudget,
)
from routewise.contracts.events import Scope
from routewise.runtime.settings import Settings
from routewise.services.budget_enforcer import handlers
from routewise.services.budget_enforcer.handlers import BudgetDeps
from tests.helpers import Clock, a_cost

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def deps(service_pool: Callable[[str], Awaitable[asyncpg.Pool]], settings: Settings) -> BudgetDeps:
    return BudgetDeps(pool=await service_pool("budget_enforcer"), settings=settings, clock=Clock(NOW))


def an_org() -> str:
    return f"org-{uuid.uuid4().hex[:8]}"


async def a_budget(
    deps: BudgetDeps, scope_type: str, scope_id: str, limit: str = "10", actor: str = "test"
) -> uuid.UUID:
    created = await handlers.create(
        CreateBudget.model_validate(
            {
                "name": f"{scope_type} {scope_id}",
                "scope_type": scope_type,
                "scope_id": scope_id,
                "period": "monthly",
                "limit_usd": limit,
                "actor": actor,
            }
        ),
        deps,
    )
    return created.id


async def settle(deps: BudgetDeps, scope: Scope, amount: str) -> uuid.UUID:
    cost = a_cost(scope, amount, at=NOW)
    async with deps.transaction() as uow:
        await handlers.settle_cost(cost, uow, deps)
    return cost.event_id


async def test_an_orgs_budgets_are_its_own_and_its_teams_users_and_workspaces(deps: BudgetDeps) -> None:
    org, other = an_org(), an_org()
    mine = {
        await a_budget(deps, "org", org),
        await a_budget(deps, "team", f"{org}/platform"),
        await a_budget(deps, "user", f"{org}/ana"),
        await a_budget(deps, "workspace", f"{org}/ws"),
    }
    await a_budget(deps, "org", other)
    await a_budget(deps, "team", f"{other}/platform")
    await a_budget(deps, "org", f"{org}x")  # a prefix of the org's id is another org

    listed = await handlers.list_budgets(ListBudgets(org_id=org), deps)
    team = await handlers.list_budgets(ListBudgets(org_id=org, scope_type="team", scope_id=f"{org}/platform"), deps)

    assert {b.id for b in listed.budgets} == mine
    assert [b.scope_id for b in team.budgets] == [f"{org}/platform"]


async def test_the_alerts_fired_are_listed_newest_first_with_their_threshold_and_cause(deps: BudgetDeps) -> None:
    org, other = an_org(), an_org()
    team = await a_budget(deps, "team", f"{org}/platform", limit="10")
    whole = await a_budget(deps, "org", org, limit="100")
    await a_budget(deps, "org", other, limit="10")
    first = await settle(deps, Scope(org_id=org, team_id="platform"), "6")  # team 60 %: 50 fires
    second = await settle(deps, Scope(org_id=org, team_id="platform"), "3")  # team 90 %: 80 fires
    await settle(deps, Scope(org_id=other), "9")  # the other org's: 50 and 80

    mine = await handlers.list_alerts(ListAlerts(org_id=org), deps)
    of_team = await handlers.list_alerts(ListAlerts(org_id=org, scope_type="team", scope_id=f"{org}/platform"), deps)
    of_org_budget = await handlers.list_alerts(ListAlerts(org_id=org, budget_id=whole), deps)
    latest = await handlers.list_alerts(ListAlerts(org_id=org, limit=1), deps)

    assert [(a.budget_id, a.threshold_percent, a.cause_event_id) for a in mine.alerts] == [
        (team, 80, second),
        (team, 50, first),
    ]
    assert mine.alerts[0].actions == ["notify", "restrict-models"] and mine.alerts[1].actions == ["notify"]
    assert (mine.alerts[0].scope_type, mine.alerts[0].scope_id) == ("team", f"{org}/platform")
    assert of_team == mine
    assert of_org_budget.alerts == []  # 9 of 100: below every threshold
    assert [a.threshold_percent for a in latest.alerts] == [80]


async def test_the_audit_log_names_who_did_what_on_which_scope_newest_first(deps: BudgetDeps) -> None:
    org, other = an_org(), an_org()
    team = await a_budget(deps, "team", f"{org}/platform", actor="key:0123456789abcdef (ci)")
    whole = await a_budget(deps, "org", org, actor="ana@laptop")
    await a_budget(deps, "org", other, actor="zoe@laptop")
    await handlers.update(UpdateBudget(budget_id=team, limit_usd=Decimal(20), actor="key:0123456789abcdef (ci)"), deps)
    until = NOW + timedelta(days=1)
    await handlers.extend(
        ExtendBudget(budget_id=whole, amount_usd=Decimal(5), until=until, reason="launch", actor="bo"), deps
    )
    in_team, elsewhere = uuid.uuid4(), uuid.uuid4()
    task_scope = Scope(org_id=org, team_id="platform", user_id="ana")
    await handlers.approve(ApproveTask(task_id=in_team, reason="demo", actor="bo", scope=task_scope), deps)
    await handlers.approve(ApproveTask(task_id=elsewhere, reason="?", actor="bo", scope=Scope(org_id=other)), deps)
    await handlers.delete(DeleteBudget(budget_id=team, actor="key:0123456789abcdef (ci)"), deps)

    log = (await handlers.list_audit(ListBudgetAudit(org_id=org), deps)).entries
    of_team = (await handlers.list_audit(ListBudgetAudit(scope_type="team", scope_id=f"{org}/platform"), deps)).entries
    of_org = (await handlers.list_audit(ListBudgetAudit(scope_type="org", scope_id=org), deps)).entries
    older = (await handlers.list_audit(ListBudgetAudit(org_id=org, before_id=log[1].id, limit=2), deps)).entries

    assert [(e.action, e.actor) for e in log] == [
        ("delete", "key:0123456789abcdef (ci)"),
        ("approve", "bo"),
        ("extend", "bo"),
        ("update", "key:0123456789abcdef (ci)"),
        ("create", "ana@laptop"),
        ("create", "key:0123456789abcdef (ci)"),
    ]
    assert (log[0].scope_type, log[0].scope_id, log[0].after) == ("team", f"{org}/platform", None)
    assert log[0].before is not None and log[0].before["limit_usd"] == "20"
    assert (log[1].task_id, log[1].task_scope, log[1].scope_type) == (in_team, task_scope, None)
    # a team's rows: its budget's, and the approval of a task within the team
    assert [e.action for e in of_team] == ["delete", "approve", "update", "create"]
    # the org's own rows: its org budget's, and every approval of its tasks
    assert [e.action for e in of_org] == ["approve", "extend", "create"]
    assert [e.action for e in older] == ["extend", "update"]
