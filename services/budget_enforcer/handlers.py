"""budget-enforcer's service layer: reservations, settlement, alerts, status and administration.

Plain functions: each takes its event or request and the service's dependencies; none knows
NATS. ``app.py`` maps subjects to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import structlog

from routewise.contracts.budget import (
    AlertHistory,
    Approval,
    ApproveTask,
    Budget,
    BudgetAuditLog,
    BudgetList,
    BudgetStatus,
    CreateBudget,
    DeleteBudget,
    ExtendBudget,
    GetBudget,
    GetBudgetStatus,
    ListAlerts,
    ListBudgetAudit,
    ListBudgets,
    ReleaseBudget,
    Released,
    Reservation,
    ReserveBudget,
    UpdateBudget,
)
from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import CostAdjusted, CostRecorded
from routewise.contracts.vocabulary import ErrorCode
from routewise.runtime.service import Deps, Runtime, UnitOfWork
from routewise.runtime.settings import Settings
from routewise.services.budget_enforcer import repository as repo
from routewise.services.budget_enforcer.domain import gates_outside

log = structlog.get_logger(__name__)


@dataclass
class BudgetDeps(Deps):
    @property
    def ttl(self) -> timedelta:
        """How long a reservation holds before it expires unsettled."""
        return timedelta(seconds=self.settings.reservation_ttl)


async def build(rt: Runtime) -> BudgetDeps:
    deps = BudgetDeps(**rt.base_deps())
    async with deps.pool.acquire() as conn:
        if stranded := await repo.unqualified_budgets(conn):
            log.warning(
                "budgets without an org apply to no task: recreate each on ORG/ID",
                budgets=[f"{kind}:{scope_id} ({budget_id})" for budget_id, kind, scope_id in stranded],
            )
    return deps


def sweep_interval(settings: Settings) -> float:
    """Unsettled reservations expire promptly: at most a quarter of their TTL late."""
    return min(5.0, settings.reservation_ttl / 4)


# --- events ---------------------------------------------------------------------------------


async def settle_cost(event: CostRecorded, uow: UnitOfWork, deps: BudgetDeps) -> None:
    """Charge the call's cost on every budget of its scope, settle the task's hold, and raise each
    threshold it crosses once per period."""
    if event.cached:
        return  # a gateway cache hit: no call, nothing spent, no hold
    alerts = await repo.settle(uow.conn, event)
    for _, alert in alerts:
        await uow.publish(deps.subjects.event(alert), alert)
    if alerts:
        log.info("budget thresholds reached", alerts=[(a.budget_name, a.threshold_percent) for _, a in alerts])


async def adjust_cost(event: CostAdjusted, uow: UnitOfWork, deps: BudgetDeps) -> None:
    """Move a corrected or voided cost's spend in the periods it was charged to; raise the
    thresholds a correction up crosses (a correction down takes no alert back). One that comes
    before its cost (or before the adjustment preceding it) is parked, and applies after it."""
    alerts = await repo.adjust(uow.conn, event)
    for _, alert in alerts:
        await uow.publish(deps.subjects.event(alert), alert)
    log.info(
        "recorded cost adjusted",
        task_id=str(event.task_id),
        delta=str(event.delta_usd),
        alerts=[(a.budget_name, a.threshold_percent) for _, a in alerts],
    )


# --- requests -------------------------------------------------------------------------------


async def reserve(req: ReserveBudget, deps: BudgetDeps) -> Reservation:
    async with deps.transaction() as uow:
        result = await repo.reserve(uow.conn, req, deps.clock(), deps.ttl)
    log.debug(  # one per decision: a line only when asked for (ROUTEWISE_LOG_LEVEL=DEBUG)
        "reservation",
        task_id=str(req.task_id),
        admitted=result.admitted,
        reason=result.reason,
        amount=str(req.amount_usd),
    )
    return result


async def release(req: ReleaseBudget, deps: BudgetDeps) -> Released:
    """Give back the named reservation's holds (a cost recorded later is still charged)."""
    async with deps.transaction() as uow:
        attempt = await repo.attempt_of(uow.conn, req.task_id, req.reservation_id)
        before, after = (
            (None, None)
            if attempt is None
            else await repo.close_reservation(uow.conn, req.task_id, "released", attempt=attempt)
        )
    if before is None:
        raise RoutewiseError(f"task {req.task_id} has no reservation {req.reservation_id}", code=ErrorCode.not_found)
    log.debug("reservation released", task_id=str(req.task_id), reason=req.reason, status=after)
    return Released(task_id=req.task_id, released=before == "held" and after == "released", status=after)


async def status(req: GetBudgetStatus, deps: BudgetDeps) -> BudgetStatus:
    # one snapshot: spend, holds and counts from the same moment, even while costs settle
    async with deps.snapshot() as conn:
        return await repo.status(conn, req.scopes(), deps.clock())


async def create(req: CreateBudget, deps: BudgetDeps) -> Budget:
    async with deps.transaction() as uow:
        return await repo.create_budget(uow.conn, req, deps.clock())


async def update(req: UpdateBudget, deps: BudgetDeps) -> Budget:
    async with deps.transaction() as uow:
        return await repo.update_budget(uow.conn, req)


async def delete(req: DeleteBudget, deps: BudgetDeps) -> Budget:
    async with deps.transaction() as uow:
        return await repo.delete_budget(uow.conn, req.budget_id, req.actor)


async def show(req: GetBudget, deps: BudgetDeps) -> Budget:
    async with deps.pool.acquire() as conn:
        return await repo.get_budget(conn, req.budget_id)


async def list_budgets(req: ListBudgets, deps: BudgetDeps) -> BudgetList:
    async with deps.pool.acquire() as conn:
        return BudgetList(budgets=await repo.list_budgets(conn, req))


async def approve(req: ApproveTask, deps: BudgetDeps) -> Approval:
    """Approve a task. One made with an API key (``approver_scope``) lifts only the gates of the
    budgets that key holds, so it is refused (``forbidden``) while a gate in force on the task's
    chain is outside it: that approval would not let the task through, and approving it is for a
    key that holds that budget."""
    if req.approver_scope is not None and req.scope is None:
        raise RoutewiseError(
            "an approval with an approver_scope names the task's scope", code=ErrorCode.invalid_request
        )
    async with deps.transaction() as uow:
        if req.approver_scope is not None and req.scope is not None:
            states = await repo.chain_states(uow.conn, req.scope, deps.clock())
            outside = gates_outside(states, req.approver_scope)
            if outside:
                gate = outside[0]
                kind, ident = req.approver_scope.chain()[0]
                raise RoutewiseError(
                    f"the approval gate of {gate.scope_type} {gate.scope_id} budget {gate.name!r} is in force on this"
                    f" task, and a key of {kind} {ident} does not hold that budget: an admin key that holds it approves"
                    f" (an org-wide admin key of {req.scope.org_id} holds every budget of its org)",
                    code=ErrorCode.forbidden,
                    details={"budget_id": gate.budget_id},
                )
        return await repo.approve(uow.conn, req)


async def extend(req: ExtendBudget, deps: BudgetDeps) -> Budget:
    async with deps.transaction() as uow:
        return await repo.extend(uow.conn, req, deps.clock())


async def list_alerts(req: ListAlerts, deps: BudgetDeps) -> AlertHistory:
    """``budget.alerts.list``: the thresholds budgets reached, newest first."""
    async with deps.pool.acquire() as conn:
        return await repo.alert_history(conn, req)


async def list_audit(req: ListBudgetAudit, deps: BudgetDeps) -> BudgetAuditLog:
    """``budget.audit.list``: who changed which budget or approved which task, newest first."""
    async with deps.pool.acquire() as conn:
        return await repo.audit_log(conn, req)


# --- jobs -----------------------------------------------------------------------------------


async def expire_due(deps: BudgetDeps) -> int:
    """Expire the holds whose TTL ran out, one per transaction (the usual lock order); returns how many."""
    now = deps.clock()
    expired = 0
    for task_id, attempt in await repo.expired_reservations(deps.pool, now):
        async with deps.transaction() as uow:
            _, after = await repo.close_reservation(uow.conn, task_id, "expired", attempt=attempt, expired_before=now)
        if after == "expired":
            expired += 1
            log.info("reservation expired unsettled", task_id=str(task_id), attempt=attempt)
    return expired
