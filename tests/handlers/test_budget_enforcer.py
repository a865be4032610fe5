"""budget-enforcer's handlers called directly: real Postgres, no bus, an injected clock."""

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
    GetBudget,
    GetBudgetStatus,
    ListBudgets,
    ReleaseBudget,
    ReserveBudget,
    UpdateBudget,
)
from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import Scope
from routewise.runtime.service import Deps
from routewise.runtime.settings import Settings
from routewise.services.budget_enforcer import handlers
from routewise.services.budget_enforcer.handlers import BudgetDeps
from tests.helpers import Clock, a_cost

NOW = datetime.now(UTC).replace(microsecond=0)  # extensions in force are read by the database clock


@pytest.fixture
async def deps(service_pool: Callable[[str], Awaitable[asyncpg.Pool]], settings: Settings) -> BudgetDeps:
    pool = await service_pool("budget_enforcer")
    return BudgetDeps(pool=pool, settings=settings.model_copy(update={"reservation_ttl": 60}), clock=Clock(NOW))


def an_org() -> Scope:
    return Scope(org_id=f"org-{uuid.uuid4().hex[:8]}")


async def a_budget(deps: Deps, scope: Scope, limit: str = "10", **extra: object) -> uuid.UUID:
    budget = await handlers.create(
        CreateBudget.model_validate(
            {
                "name": "monthly",
                "scope_type": "org",
                "scope_id": scope.org_id,
                "period": "monthly",
                "limit_usd": limit,
                "actor": "test",
                **extra,
            }
        ),
        deps,
    )
    return budget.id


async def test_a_reservation_holds_on_the_budget_until_released(deps: BudgetDeps) -> None:
    scope = an_org()
    await a_budget(deps, scope)
    task = uuid.uuid4()

    held = await handlers.reserve(ReserveBudget(task_id=task, scope=scope, amount_usd=Decimal(4), model="gpt-4o"), deps)
    status = await handlers.status(GetBudgetStatus(scope=scope), deps)
    assert held.reservation_id is not None
    released = await handlers.release(ReleaseBudget(task_id=task, reservation_id=held.reservation_id), deps)
    after = await handlers.status(GetBudgetStatus(scope=scope), deps)

    assert held.admitted and held.expires_at == NOW + timedelta(seconds=60)
    assert status.budgets[0].reserved_usd == Decimal(4)
    assert released.released and released.status == "released"
    assert after.budgets[0].reserved_usd == 0


async def test_a_hard_limit_refuses_what_does_not_fit(deps: BudgetDeps) -> None:
    scope = an_org()
    budget_id = await a_budget(deps, scope, limit="1")

    refused = await handlers.reserve(
        ReserveBudget(task_id=uuid.uuid4(), scope=scope, amount_usd=Decimal(2), model="gpt-4o"), deps
    )

    assert not refused.admitted and refused.reason == "budget_exhausted" and refused.budget_id == budget_id


async def test_settling_a_cost_charges_it_and_publishes_each_threshold_once(
    deps: BudgetDeps, admin: asyncpg.Connection
) -> None:
    scope = an_org()
    await a_budget(deps, scope, limit="10")

    for amount in ("6", "1"):  # 60 % crosses 50 once; 70 % crosses nothing new
        async with deps.transaction() as uow:
            await handlers.settle_cost(a_cost(scope, amount, at=NOW), uow, deps)

    status = await handlers.status(GetBudgetStatus(scope=scope), deps)
    alerts = await admin.fetch(
        "SELECT subject, payload FROM budget_enforcer.outbox WHERE subject = $1",
        deps.subjects.budget_alert("org", scope.org_id),
    )
    assert status.spent_usd == Decimal(7)
    assert [a["payload"] for a in alerts] and len(alerts) == 1 and b'"threshold_percent":50' in alerts[0]["payload"]


async def test_only_the_named_reservation_is_released_and_a_settled_task_cannot_hold_again(deps: BudgetDeps) -> None:
    scope = an_org()
    await a_budget(deps, scope)
    task = uuid.uuid4()
    held = await handlers.reserve(ReserveBudget(task_id=task, scope=scope, amount_usd=Decimal(3), model="gpt-4o"), deps)

    with pytest.raises(RoutewiseError, match="no reservation") as unknown:
        await handlers.release(ReleaseBudget(task_id=task, reservation_id=uuid.uuid4()), deps)
    still = (await handlers.status(GetBudgetStatus(scope=scope), deps)).budgets[0].reserved_usd
    async with deps.transaction() as uow:
        await handlers.settle_cost(a_cost(scope, "1", at=NOW, task_id=task), uow, deps)
    again = await handlers.reserve(
        ReserveBudget(task_id=task, scope=scope, amount_usd=Decimal(3), model="gpt-4o"), deps
    )
    after = await handlers.status(GetBudgetStatus(scope=scope), deps)

    assert unknown.value.code == "not_found" and held.admitted and still == Decimal(3)
    assert (again.admitted, again.reason) == (False, "already_settled")
    assert (after.budgets[0].reserved_usd, after.spent_usd) == (0, Decimal(1))


async def test_each_attempt_of_a_task_holds_for_itself_and_is_settled_by_its_own_cost(deps: BudgetDeps) -> None:
    scope = an_org()
    await a_budget(deps, scope, limit="10")
    task = uuid.uuid4()

    def ask(attempt: int, amount: str) -> ReserveBudget:
        return ReserveBudget(task_id=task, scope=scope, amount_usd=Decimal(amount), model="gpt-4o", attempt=attempt)

    first = await handlers.reserve(ask(1, "3"), deps)
    async with deps.transaction() as uow:  # the first call failed, reporting no usage
        await handlers.settle_cost(
            a_cost(scope, "0", at=NOW, task_id=task).model_copy(update={"success": False, "error_type": "http_500"}),
            uow,
            deps,
        )
    fallback = await handlers.reserve(ask(2, "4"), deps)
    held = (await handlers.status(GetBudgetStatus(scope=scope), deps)).budgets[0].reserved_usd
    async with deps.transaction() as uow:
        await handlers.settle_cost(
            a_cost(scope, "2.5", at=NOW, task_id=task).model_copy(update={"attempt": 2}), uow, deps
        )
    again = await handlers.reserve(ask(1, "3"), deps)
    after = await handlers.status(GetBudgetStatus(scope=scope), deps)

    assert first.admitted and fallback.admitted and fallback.reservation_id != first.reservation_id
    assert held == Decimal(4)  # only the fallback's hold: the first was settled by its $0 cost
    assert (again.admitted, again.reason) == (False, "already_settled")
    assert (after.budgets[0].reserved_usd, after.spent_usd, after.costs_recorded) == (0, Decimal("2.5"), 2)


async def test_a_hold_past_its_ttl_expires(deps: BudgetDeps) -> None:
    scope = an_org()
    await a_budget(deps, scope)
    await handlers.reserve(ReserveBudget(task_id=uuid.uuid4(), scope=scope, amount_usd=Decimal(3), model="m"), deps)
    assert isinstance(deps.clock, Clock)

    assert await handlers.expire_due(deps) == 0  # not yet
    deps.clock.now = NOW + timedelta(seconds=61)
    expired = await handlers.expire_due(deps)

    assert expired >= 1
    assert (await handlers.status(GetBudgetStatus(scope=scope), deps)).budgets[0].reserved_usd == 0


async def test_budgets_are_created_shown_listed_updated_extended_and_deleted(deps: BudgetDeps) -> None:
    scope = an_org()
    budget_id = await a_budget(deps, scope, limit="5")

    shown = await handlers.show(GetBudget(budget_id=budget_id), deps)
    listed = await handlers.list_budgets(ListBudgets(scope_type="org", scope_id=scope.org_id), deps)
    updated = await handlers.update(UpdateBudget(budget_id=budget_id, actor="test", limit_usd=Decimal(8)), deps)
    extended = await handlers.extend(
        ExtendBudget(
            budget_id=budget_id, amount_usd=Decimal(2), until=NOW + timedelta(days=1), reason="launch", actor="t"
        ),
        deps,
    )
    deleted = await handlers.delete(DeleteBudget(budget_id=budget_id, actor="test"), deps)

    assert shown.limit_usd == Decimal(5) and [b.id for b in listed.budgets] == [budget_id]
    assert updated.limit_usd == Decimal(8)
    assert [e.amount_usd for e in extended.extensions] == [Decimal(2)]
    assert deleted.id == budget_id
    assert (await handlers.list_budgets(ListBudgets(scope_type="org", scope_id=scope.org_id), deps)).budgets == []


async def test_an_approval_lets_a_task_past_require_approval(deps: BudgetDeps) -> None:
    scope = an_org()
    await a_budget(deps, scope, limit="10", thresholds=[{"percent": 10, "actions": ["notify", "require-approval"]}])
    async with deps.transaction() as uow:
        await handlers.settle_cost(a_cost(scope, "2", at=NOW), uow, deps)
    task = uuid.uuid4()
    ask = ReserveBudget(task_id=task, scope=scope, amount_usd=Decimal(1), model="gpt-4o")

    before = await handlers.reserve(ask, deps)
    approval = await handlers.approve(ApproveTask(task_id=task, actor="lead", reason="needed"), deps)
    after = await handlers.reserve(ask, deps)

    assert not before.admitted and before.reason == "approval_required"
    assert approval.actor == "lead"
    assert after.admitted


async def test_an_api_keys_approval_lifts_only_the_gates_of_the_budgets_it_holds(deps: BudgetDeps) -> None:
    org = an_org()
    team = Scope(org_id=org.org_id, team_id="platform")
    gate = [{"percent": 10, "actions": ["require-approval"]}]
    await a_budget(deps, org, limit="100", thresholds=gate, name="org")
    await a_budget(deps, team, limit="20", thresholds=gate, scope_type="team", scope_id=f"{org.org_id}/platform")
    task = uuid.uuid4()

    async def reserve(attempt: int) -> str | None:
        asked = ReserveBudget(task_id=task, scope=team, amount_usd=Decimal(1), model="gpt-4o", attempt=attempt)
        return (await handlers.reserve(asked, deps)).reason

    def approval(approver: Scope | None) -> ApproveTask:
        return ApproveTask(
            task_id=task, actor="key:0123456789abcdef (x)", reason="r", scope=team, approver_scope=approver
        )

    async with deps.transaction() as uow:
        await handlers.settle_cost(a_cost(team, "2", at=NOW), uow, deps)  # the team at 10 %, the org at 2 %
    gated = await reserve(1)
    by_team = await handlers.approve(approval(team), deps)
    past_the_team = await reserve(1)
    async with deps.transaction() as uow:
        await handlers.settle_cost(a_cost(team, "10", at=NOW), uow, deps)  # the org's gate comes into force too
    held_by_the_org = await reserve(2)  # the team admin's approval does not lift the org's gate
    with pytest.raises(RoutewiseError) as refused:
        await handlers.approve(approval(team), deps)
    by_org = await handlers.approve(approval(org), deps)
    past_both = await reserve(2)
    with pytest.raises(RoutewiseError, match="names the task's scope"):  # without it, its gates are unknown
        await handlers.approve(approval(org).model_copy(update={"scope": None}), deps)

    assert (gated, past_the_team, held_by_the_org, past_both) == ("approval_required", None, "approval_required", None)
    assert by_team.approver_scope == team and by_org.approver_scope == org
    assert refused.value.code == "forbidden"
    assert f"org {org.org_id} budget 'org'" in refused.value.message and "does not hold" in refused.value.message
