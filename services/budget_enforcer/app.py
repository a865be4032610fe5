"""budget-enforcer's bus adapters: reservations, settlement, alerts, status and administration."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import structlog
from faststream.nats import NatsRouter

from services.budget_enforcer import repository as repo
from shared.bus import reply
from shared.db import Connection, unit_of_work
from shared.events import CostRecorded, TaskRejected, utcnow
from shared.outbox import enqueue
from shared.requests import (
    Approval,
    ApproveTask,
    Budget,
    BudgetList,
    BudgetStatus,
    CreateBudget,
    DeleteBudget,
    ExtendBudget,
    GetBudget,
    GetBudgetStatus,
    ListBudgets,
    ReleaseBudget,
    Released,
    Reservation,
    ReserveBudget,
    UpdateBudget,
)
from shared.service import Runtime, ServiceSpec

NAME = "budget_enforcer"
log = structlog.get_logger(__name__)


def register(router: NatsRouter, rt: Runtime) -> None:
    subjects = rt.subjects
    ttl = timedelta(seconds=rt.settings.reservation_ttl)
    sweep_every = min(5.0, rt.settings.reservation_ttl / 4)  # unsettled reservations expire promptly

    async def reserve(req: ReserveBudget) -> Reservation:
        async with unit_of_work(rt.pool) as conn:
            result = await repo.reserve(conn, req, utcnow(), ttl)
        log.info(
            "reservation",
            task_id=str(req.task_id),
            admitted=result.admitted,
            reason=result.reason,
            amount=str(req.amount_usd),
        )
        return result

    async def release(req: ReleaseBudget) -> Released:
        async with unit_of_work(rt.pool) as conn:
            before, after = await repo.close_reservation(conn, req.task_id, "released")
        return Released(task_id=req.task_id, released=before == "held" and after == "released", status=after)

    async def on_cost_recorded(conn: Connection, event: CostRecorded) -> None:
        alerts = await repo.settle(conn, event)
        for scope_type, alert in alerts:
            await enqueue(conn, subjects.budget_alert(scope_type, alert.scope_id), alert)
        if alerts:
            rt.outbox.poke()
            log.info("budget thresholds reached", alerts=[(a.budget_name, a.threshold_percent) for _, a in alerts])

    async def on_task_rejected(conn: Connection, event: TaskRejected) -> None:
        await repo.close_reservation(conn, event.task_id, "released")

    async def expire_forever() -> None:
        while True:
            await asyncio.sleep(sweep_every)
            try:
                now = utcnow()
                for task_id in await repo.expired_reservations(rt.pool, now):
                    async with unit_of_work(rt.pool) as conn:  # one at a time: the usual lock order
                        _, after = await repo.close_reservation(conn, task_id, "expired", expired_before=now)
                    if after == "expired":
                        log.info("reservation expired unsettled", task_id=str(task_id))
            except Exception:
                log.exception("expiring reservations failed; will retry")

    async def started(_: Runtime) -> None:
        rt.spawn(expire_forever(), "expire-reservations")

    async def status(req: GetBudgetStatus) -> BudgetStatus:
        # one snapshot: spend, holds and counts from the same moment, even while costs settle
        async with rt.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await repo.status(conn, req.scopes(), utcnow())

    async def create(req: CreateBudget) -> Budget:
        async with unit_of_work(rt.pool) as conn:
            return await repo.create_budget(conn, req, utcnow())

    async def update(req: UpdateBudget) -> Budget:
        async with unit_of_work(rt.pool) as conn:
            return await repo.update_budget(conn, req)

    async def delete(req: DeleteBudget) -> Budget:
        async with unit_of_work(rt.pool) as conn:
            return await repo.delete_budget(conn, req.budget_id, req.actor)

    async def show(req: GetBudget) -> Budget:
        async with rt.pool.acquire() as conn:
            return await repo.get_budget(conn, req.budget_id)

    async def list_all(req: ListBudgets) -> BudgetList:
        async with rt.pool.acquire() as conn:
            return BudgetList(budgets=await repo.list_budgets(conn, req.scope_type, req.scope_id))

    async def approve(req: ApproveTask) -> Approval:
        async with unit_of_work(rt.pool) as conn:
            return await repo.approve(conn, req)

    async def extend(req: ExtendBudget) -> Budget:
        async with unit_of_work(rt.pool) as conn:
            return await repo.extend(conn, req, utcnow())

    rt.consume_once(router, subjects.cost_recorded, CostRecorded, on_cost_recorded)
    rt.consume_once(router, subjects.task_rejected, TaskRejected, on_task_rejected)
    reply(router, subjects.budget_reserve, NAME, ReserveBudget, reserve)
    reply(router, subjects.budget_release, NAME, ReleaseBudget, release)
    reply(router, subjects.budget_status, NAME, GetBudgetStatus, status)
    reply(router, subjects.budget_create, NAME, CreateBudget, create)
    reply(router, subjects.budget_update, NAME, UpdateBudget, update)
    reply(router, subjects.budget_delete, NAME, DeleteBudget, delete)
    reply(router, subjects.budget_show, NAME, GetBudget, show)
    reply(router, subjects.budget_list, NAME, ListBudgets, list_all)
    reply(router, subjects.budget_approve, NAME, ApproveTask, approve)
    reply(router, subjects.budget_extend, NAME, ExtendBudget, extend)
    rt.on_startup(started)


SPEC = ServiceSpec(name=NAME, migrations=Path(__file__).parent / "migrations", register=register)
