"""budget-enforcer's tables. Every change to spend or holds happens under row locks on the
budgets involved, always taken in id order, so concurrent reservations and settlements (on
any number of replicas) serialise per budget and never deadlock."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from services.budget_enforcer.domain import (
    DEFAULT_THRESHOLDS,
    SEVERITY,
    Action,
    BudgetState,
    Period,
    Restrictions,
    Threshold,
    admit,
    in_force,
    percent_of,
    period_bounds,
    status_of,
)
from shared.db import Connection
from shared.errors import RoutewiseError
from shared.events import BudgetAlert, CostRecorded, Tier
from shared.requests import (
    Approval,
    ApproveTask,
    Budget,
    BudgetStatus,
    BudgetView,
    CostRestrictions,
    CreateBudget,
    ExtendBudget,
    Extension,
    Reservation,
    ReserveBudget,
    ThresholdSpec,
    UpdateBudget,
)

ZERO = Decimal(0)


# ------------------------------------------------------------------ budgets and their state


def thresholds_of(raw: list[dict[str, Any]]) -> tuple[Threshold, ...]:
    return tuple(
        Threshold(
            percent=t["percent"],
            actions=tuple(Action(a) for a in t["actions"]),
            restricted_models=tuple(t.get("restricted_models") or ()),
            max_tier=Tier(t["max_tier"]) if t.get("max_tier") else None,
        )
        for t in raw
    )


def thresholds_json(specs: list[ThresholdSpec] | None) -> list[dict[str, Any]]:
    if specs is None:
        return [
            {
                "percent": t.percent,
                "actions": [a.value for a in t.actions],
                "restricted_models": list(t.restricted_models),
                "max_tier": t.max_tier.value if t.max_tier else None,
            }
            for t in DEFAULT_THRESHOLDS
        ]
    return [s.model_dump(mode="json") for s in specs]


async def lock_budgets(conn: Connection, ids: list[UUID]) -> None:
    if ids:
        await conn.execute("SELECT 1 FROM budgets WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE", ids)


async def chain_budgets(conn: Connection, scopes: list[tuple[str, str]], at: datetime) -> list[asyncpg.Record]:
    """Budgets of these scopes that have started by ``at``, narrowest scope first."""
    rows = await conn.fetch(
        """SELECT b.* FROM budgets b
           JOIN unnest($1::text[], $2::text[]) WITH ORDINALITY AS s(scope_type, scope_id, rank)
             ON b.scope_type = s.scope_type AND b.scope_id = s.scope_id
           WHERE b.starts_at <= $3 ORDER BY s.rank, b.created_at""",
        [t for t, _ in scopes],
        [i for _, i in scopes],
        at,
    )
    return list(rows)


@dataclass(frozen=True)
class PeriodRow:
    start: datetime
    end: datetime | None
    spent: Decimal
    reserved: Decimal
    costs: int


async def period_of(conn: Connection, budget: asyncpg.Record, at: datetime) -> PeriodRow:
    start, end = period_bounds(Period(budget["period"]), budget["timezone"], budget["starts_at"], at)
    row = await conn.fetchrow(
        "SELECT spent_usd, reserved_usd, costs_recorded FROM budget_periods WHERE budget_id = $1 AND period_start = $2",
        budget["id"],
        start,
    )
    if row is None:
        return PeriodRow(start, end, ZERO, ZERO, 0)
    return PeriodRow(start, end, row["spent_usd"], row["reserved_usd"], row["costs_recorded"])


async def add_to_period(
    conn: Connection,
    budget_id: UUID,
    period: PeriodRow,
    *,
    spent: Decimal = ZERO,
    reserved: Decimal = ZERO,
    costs: int = 0,
) -> None:
    await conn.execute(
        """INSERT INTO budget_periods AS p
               (budget_id, period_start, period_end, spent_usd, reserved_usd, costs_recorded)
           VALUES ($1, $2, $3, greatest($4::numeric, 0), greatest($5::numeric, 0), $6)
           ON CONFLICT (budget_id, period_start) DO UPDATE SET
               spent_usd = greatest(p.spent_usd + $4::numeric, 0),
               reserved_usd = greatest(p.reserved_usd + $5::numeric, 0),
               costs_recorded = p.costs_recorded + $6,
               updated_at = now()""",
        budget_id,
        period.start,
        period.end,
        spent,
        reserved,
        costs,
    )


async def effective_limit(conn: Connection, budget: asyncpg.Record, at: datetime) -> Decimal:
    extra = await conn.fetchval(
        "SELECT coalesce(sum(amount_usd), 0) FROM extensions"
        " WHERE budget_id = $1 AND created_at <= $2 AND expires_at > $2",
        budget["id"],
        at,
    )
    return Decimal(budget["limit_usd"]) + Decimal(extra)


async def state_of(conn: Connection, budget: asyncpg.Record, at: datetime) -> tuple[BudgetState, PeriodRow]:
    period = await period_of(conn, budget, at)
    state = BudgetState(
        budget_id=str(budget["id"]),
        name=budget["name"],
        scope_type=budget["scope_type"],
        scope_id=budget["scope_id"],
        hard=budget["hard"],
        limit=await effective_limit(conn, budget, at),
        spent=period.spent,
        reserved=period.reserved,
        max_cost_per_request=budget["max_cost_per_request"],
        thresholds=thresholds_of(budget["thresholds"]),
    )
    return state, period


def restrictions_model(r: Restrictions) -> CostRestrictions:
    return CostRestrictions(
        model_downgrading=r.model_downgrading,
        restricted_models=sorted(r.restricted_models),
        max_tier=r.max_tier,
        max_cost_per_request=r.max_cost_per_request,
        block_non_essential=r.block_non_essential,
        approval_required=r.approval_required,
    )


# ------------------------------------------------------------------ reservations


async def reserve(conn: Connection, req: ReserveBudget, now: datetime, ttl: timedelta) -> Reservation:
    """Hold the amount on every budget of the chain, atomically, or refuse with the reason.

    A task that already holds a reservation gets the same answer again.
    """
    existing = await conn.fetchrow("SELECT * FROM reservations WHERE task_id = $1 FOR UPDATE", req.task_id)
    if existing is not None and existing["status"] in ("held", "settled"):
        return Reservation(
            task_id=req.task_id,
            admitted=True,
            reservation_id=existing["reservation_id"],
            amount_usd=existing["amount_usd"],
            expires_at=existing["expires_at"],
            detail=f"already reserved ({existing['status']})",
            restrictions=CostRestrictions(),
        )
    if existing is not None:  # released or expired: this is a new attempt
        await conn.execute("DELETE FROM reservations WHERE task_id = $1", req.task_id)
    budgets = await chain_budgets(conn, req.scope.chain(), now)
    await lock_budgets(conn, [b["id"] for b in budgets])
    states = [await state_of(conn, b, now) for b in budgets]
    approved = await conn.fetchval("SELECT 1 FROM approvals WHERE task_id = $1", req.task_id) is not None
    verdict = admit([s for s, _ in states], req.amount_usd, req.model, req.tier, approved=approved)
    restrictions = restrictions_model(verdict.restrictions)
    if not verdict.admitted:
        return Reservation(
            task_id=req.task_id,
            admitted=False,
            amount_usd=req.amount_usd,
            reason=verdict.reason.value if verdict.reason else None,
            detail=verdict.detail,
            budget_id=UUID(verdict.budget_id) if verdict.budget_id else None,
            restrictions=restrictions,
        )
    reservation_id = uuid.uuid4()
    expires_at = now + ttl
    await conn.execute(
        "INSERT INTO reservations (task_id, reservation_id, model, amount_usd, status, expires_at)"
        " VALUES ($1, $2, $3, $4, 'held', $5)",
        req.task_id,
        reservation_id,
        req.model,
        req.amount_usd,
        expires_at,
    )
    for budget, (_, period) in zip(budgets, states, strict=True):
        await conn.execute(
            "INSERT INTO reservation_holds (task_id, budget_id, period_start, amount_usd) VALUES ($1, $2, $3, $4)",
            req.task_id,
            budget["id"],
            period.start,
            req.amount_usd,
        )
        await add_to_period(conn, budget["id"], period, reserved=req.amount_usd)
    return Reservation(
        task_id=req.task_id,
        admitted=True,
        reservation_id=reservation_id,
        amount_usd=req.amount_usd,
        expires_at=expires_at,
        detail=verdict.detail,
        restrictions=restrictions,
        over_soft_limit=[UUID(b) for b in verdict.over_soft_limit],
    )


async def close_reservation(conn: Connection, task_id: UUID, status: str) -> str | None:
    """Give back a held reservation's holds; returns the status it ends in (None: no reservation)."""
    row = await conn.fetchrow("SELECT status FROM reservations WHERE task_id = $1 FOR UPDATE", task_id)
    if row is None:
        return None
    if row["status"] != "held":
        return str(row["status"])
    holds = await conn.fetch(
        "SELECT budget_id, period_start, amount_usd FROM reservation_holds WHERE task_id = $1 ORDER BY budget_id",
        task_id,
    )
    await lock_budgets(conn, [h["budget_id"] for h in holds])
    for hold in holds:
        await conn.execute(
            """UPDATE budget_periods SET reserved_usd = greatest(reserved_usd - $3::numeric, 0), updated_at = now()
               WHERE budget_id = $1 AND period_start = $2""",
            hold["budget_id"],
            hold["period_start"],
            hold["amount_usd"],
        )
    await conn.execute("UPDATE reservations SET status = $2, closed_at = now() WHERE task_id = $1", task_id, status)
    return status


async def expired_reservations(conn: Connection, now: datetime, limit: int = 100) -> list[UUID]:
    rows = await conn.fetch(
        "SELECT task_id FROM reservations WHERE status = 'held' AND expires_at < $1"
        " ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        now,
        limit,
    )
    return [r["task_id"] for r in rows]


# ------------------------------------------------------------------ settlement


async def settle(conn: Connection, event: CostRecorded) -> list[tuple[str, BudgetAlert]]:
    """Charge a recorded cost to every budget of its chain, in the period of its own timestamp.

    The task's hold is given back first (the actual cost replaces it). Returns the alerts to
    publish: thresholds reached for the first time in that period.
    """
    scope = event.scope
    at = event.occurred_at
    held = await conn.fetchval("SELECT 1 FROM reservations WHERE task_id = $1 AND status = 'held'", event.task_id)
    budgets = await chain_budgets(conn, scope.chain(), at)
    hold_budgets = (
        [
            r["budget_id"]
            for r in await conn.fetch("SELECT budget_id FROM reservation_holds WHERE task_id = $1", event.task_id)
        ]
        if held
        else []
    )
    await lock_budgets(conn, sorted({b["id"] for b in budgets} | set(hold_budgets)))
    if held:
        await close_reservation(conn, event.task_id, "settled")
    await conn.execute(
        """INSERT INTO spend_ledger (event_id, task_id, org_id, team_id, user_id, workspace_id, model, cost_usd,
               occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        event.event_id,
        event.task_id,
        scope.org_id,
        scope.team_id,
        scope.user_id,
        scope.workspace_id,
        event.model,
        event.cost_usd,
        at,
    )
    for scope_type, scope_id in scope.chain():
        await conn.execute(
            """INSERT INTO scope_spend AS s (scope_type, scope_id, spent_usd, costs_recorded) VALUES ($1, $2, $3, 1)
               ON CONFLICT (scope_type, scope_id) DO UPDATE SET spent_usd = s.spent_usd + EXCLUDED.spent_usd,
                   costs_recorded = s.costs_recorded + 1, updated_at = now()""",
            scope_type,
            scope_id,
            event.cost_usd,
        )
    alerts: list[tuple[str, BudgetAlert]] = []
    for budget in budgets:
        period = await period_of(conn, budget, at)
        await add_to_period(conn, budget["id"], period, spent=event.cost_usd, costs=1)
        await conn.execute(
            "INSERT INTO budget_charges (event_id, budget_id, period_start, amount_usd) VALUES ($1, $2, $3, $4)",
            event.event_id,
            budget["id"],
            period.start,
            event.cost_usd,
        )
        spent = period.spent + event.cost_usd
        limit = await effective_limit(conn, budget, at)
        percent = percent_of(spent, limit)
        thresholds = thresholds_of(budget["thresholds"])
        reached = in_force(thresholds, percent)
        for threshold in reached:
            alert = BudgetAlert(
                budget_id=budget["id"],
                budget_name=budget["name"],
                scope_type=budget["scope_type"],
                scope_id=budget["scope_id"],
                org_id=scope.org_id,
                period_start=period.start,
                period_end=period.end,
                threshold_percent=threshold.percent,
                spent_usd=spent,
                limit_usd=limit,
                percent=percent,
                actions=[a.value for a in threshold.actions],
                actions_in_force=sorted({a.value for t in reached for a in t.actions}),
                cause_event_id=event.event_id,
            )
            first = await conn.fetchval(
                """INSERT INTO alerts_fired (budget_id, period_start, threshold, alert_event_id, cause_event_id)
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING 1""",
                budget["id"],
                period.start,
                threshold.percent,
                alert.event_id,
                event.event_id,
            )
            if first:
                alerts.append((budget["scope_type"], alert))
    return alerts


# ------------------------------------------------------------------ status


async def status(conn: Connection, scopes: list[tuple[str, str]], now: datetime) -> BudgetStatus:
    views: list[BudgetView] = []
    merged = Restrictions()
    tightest: tuple[Decimal, Decimal] | None = None  # (remaining, limit)
    for budget in await chain_budgets(conn, scopes, now):
        state, period = await state_of(conn, budget, now)
        merged.cap_request(state.max_cost_per_request)
        reached = in_force(state.thresholds, state.percent)
        for threshold in reached:
            merged.add(threshold)
        remaining = max(state.limit - state.used, ZERO)
        if tightest is None or remaining < tightest[0]:
            tightest = (remaining, state.limit)
        views.append(
            BudgetView(
                budget_id=budget["id"],
                name=budget["name"],
                scope_type=budget["scope_type"],
                scope_id=budget["scope_id"],
                period=budget["period"],
                mode="hard" if budget["hard"] else "soft",
                period_start=period.start,
                period_end=period.end,
                limit_usd=state.limit,
                base_limit_usd=budget["limit_usd"],
                current_spend_usd=state.spent,
                reserved_usd=state.reserved,
                remaining_usd=remaining,
                percent_used=state.percent,
                status=status_of(state),
                thresholds_in_force=[t.percent for t in reached],
            )
        )
    scope_type, scope_id = scopes[0]
    spend = await conn.fetchrow(
        "SELECT spent_usd, costs_recorded FROM scope_spend WHERE scope_type = $1 AND scope_id = $2",
        scope_type,
        scope_id,
    )
    return BudgetStatus(
        scope_type=scope_type,
        scope_id=scope_id,
        budgets=views,
        aggregate_status=max((v.status for v in views), key=SEVERITY.index, default="ok"),
        cost_restrictions=restrictions_model(merged),
        spent_usd=spend["spent_usd"] if spend else ZERO,
        costs_recorded=spend["costs_recorded"] if spend else 0,
        remaining_usd=tightest[0] if tightest else None,
        limit_usd=tightest[1] if tightest else None,
    )


# ------------------------------------------------------------------ administration


def _budget_model(row: asyncpg.Record, extensions: list[asyncpg.Record]) -> Budget:
    return Budget(
        id=row["id"],
        name=row["name"],
        scope_type=row["scope_type"],
        scope_id=row["scope_id"],
        period=row["period"],
        timezone=row["timezone"],
        starts_at=row["starts_at"],
        limit_usd=row["limit_usd"],
        mode="hard" if row["hard"] else "soft",
        max_cost_per_request=row["max_cost_per_request"],
        thresholds=[ThresholdSpec.model_validate(t) for t in row["thresholds"]],
        extensions=[
            Extension(
                id=e["id"], amount_usd=e["amount_usd"], expires_at=e["expires_at"], reason=e["reason"], actor=e["actor"]
            )
            for e in extensions
        ],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def get_budget(conn: Connection, budget_id: UUID, *, lock: bool = False) -> Budget:
    row = await conn.fetchrow(f"SELECT * FROM budgets WHERE id = $1{' FOR UPDATE' if lock else ''}", budget_id)
    if row is None:
        raise RoutewiseError(f"no budget {budget_id}", code="not_found")
    extensions = await conn.fetch(
        "SELECT * FROM extensions WHERE budget_id = $1 AND expires_at > now() ORDER BY expires_at", budget_id
    )
    return _budget_model(row, list(extensions))


async def audit(
    conn: Connection,
    actor: str,
    action: str,
    *,
    budget_id: UUID | None = None,
    task_id: UUID | None = None,
    before: Any = None,
    after: Any = None,
) -> None:
    def js(model: Any) -> Any:
        return None if model is None else json.loads(model.model_dump_json())

    await conn.execute(
        "INSERT INTO budget_audit (actor, action, budget_id, task_id, before, after) VALUES ($1, $2, $3, $4, $5, $6)",
        actor,
        action,
        budget_id,
        task_id,
        js(before),
        js(after),
    )


async def create_budget(conn: Connection, req: CreateBudget, now: datetime) -> Budget:
    budget_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO budgets (id, name, scope_type, scope_id, period, timezone, starts_at, limit_usd, hard,
               max_cost_per_request, thresholds) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
        budget_id,
        req.name,
        req.scope_type,
        req.scope_id,
        req.period,
        req.timezone,
        req.starts_at or now,
        req.limit_usd,
        req.mode == "hard",
        req.max_cost_per_request,
        thresholds_json(req.thresholds),
    )
    created = await get_budget(conn, budget_id)
    await audit(conn, req.actor, "create", budget_id=budget_id, after=created)
    return created


async def update_budget(conn: Connection, req: UpdateBudget) -> Budget:
    before = await get_budget(conn, req.budget_id, lock=True)
    changes: dict[str, Any] = {}
    if req.name is not None:
        changes["name"] = req.name
    if req.limit_usd is not None:
        changes["limit_usd"] = req.limit_usd
    if req.mode is not None:
        changes["hard"] = req.mode == "hard"
    if req.timezone is not None:
        changes["timezone"] = req.timezone
    if req.max_cost_per_request is not None:
        changes["max_cost_per_request"] = req.max_cost_per_request
    elif req.clear_max_cost_per_request:
        changes["max_cost_per_request"] = None
    if req.thresholds is not None:
        changes["thresholds"] = thresholds_json(req.thresholds)
    if not changes:
        raise RoutewiseError("nothing to change: give at least one new value", code="invalid_request")
    assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
    await conn.execute(
        f"UPDATE budgets SET {assignments}, updated_at = now() WHERE id = $1", req.budget_id, *changes.values()
    )
    after = await get_budget(conn, req.budget_id)
    await audit(conn, req.actor, "update", budget_id=req.budget_id, before=before, after=after)
    return after


async def delete_budget(conn: Connection, budget_id: UUID, actor: str) -> Budget:
    before = await get_budget(conn, budget_id, lock=True)
    await conn.execute("DELETE FROM budgets WHERE id = $1", budget_id)
    await audit(conn, actor, "delete", budget_id=budget_id, before=before)
    return before


async def list_budgets(conn: Connection, scope_type: str | None, scope_id: str | None) -> list[Budget]:
    rows = await conn.fetch(
        """SELECT * FROM budgets WHERE ($1::text IS NULL OR scope_type = $1) AND ($2::text IS NULL OR scope_id = $2)
           ORDER BY scope_type, scope_id, created_at""",
        scope_type,
        scope_id,
    )
    return [await get_budget(conn, r["id"]) for r in rows]


async def approve(conn: Connection, req: ApproveTask) -> Approval:
    row = await conn.fetchrow(
        """INSERT INTO approvals (task_id, actor, reason) VALUES ($1, $2, $3)
           ON CONFLICT (task_id) DO UPDATE SET actor = EXCLUDED.actor, reason = EXCLUDED.reason
           RETURNING task_id, actor, reason, created_at""",
        req.task_id,
        req.actor,
        req.reason,
    )
    assert row is not None
    approval = Approval(**dict(row))
    await audit(conn, req.actor, "approve", task_id=req.task_id, after=approval)
    return approval


async def extend(conn: Connection, req: ExtendBudget, now: datetime) -> Budget:
    if req.until <= now:
        raise RoutewiseError(
            f"an extension must end in the future, not {req.until.isoformat()}", code="invalid_request"
        )
    before = await get_budget(conn, req.budget_id, lock=True)
    await conn.execute(
        "INSERT INTO extensions (id, budget_id, amount_usd, expires_at, reason, actor) VALUES ($1, $2, $3, $4, $5, $6)",
        uuid.uuid4(),
        req.budget_id,
        req.amount_usd,
        req.until,
        req.reason,
        req.actor,
    )
    after = await get_budget(conn, req.budget_id)
    await audit(conn, req.actor, "extend", budget_id=req.budget_id, before=before, after=after)
    return after
