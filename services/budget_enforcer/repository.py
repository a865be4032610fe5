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

from routewise.contracts.budget import (
    AlertHistory,
    Approval,
    ApproveTask,
    AuditEntry,
    Budget,
    BudgetAuditLog,
    BudgetStatus,
    BudgetView,
    CostRestrictions,
    CreateBudget,
    ExtendBudget,
    Extension,
    FiredAlert,
    ListAlerts,
    ListBudgetAudit,
    ListBudgets,
    Reservation,
    ReserveBudget,
    ThresholdSpec,
    UpdateBudget,
)
from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import BudgetAlert, CostAdjusted, CostRecorded, Scope, Tier, fixed_point
from routewise.contracts.vocabulary import ErrorCode, Period, ThresholdAction
from routewise.runtime import adjustments
from routewise.runtime.db import Connection
from routewise.services.budget_enforcer.domain import (
    DEFAULT_THRESHOLDS,
    SEVERITY,
    BudgetState,
    Restrictions,
    Threshold,
    admit,
    in_force,
    percent_of,
    period_bounds,
    shown,
    status_of,
)

ZERO = Decimal(0)


# ------------------------------------------------------------------ budgets and their state


def thresholds_of(raw: list[dict[str, Any]]) -> tuple[Threshold, ...]:
    return tuple(
        Threshold(
            percent=t["percent"],
            actions=tuple(ThresholdAction(a) for a in t["actions"]),
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


async def chain_budgets(
    conn: Connection, scopes: list[tuple[str, str]], at: datetime, *, lock: bool = False
) -> list[asyncpg.Record]:
    """Budgets of these scopes that have started by ``at``, narrowest scope first.

    With ``lock``, their rows are locked in id order (the order every writer uses).
    """
    rows = await conn.fetch(
        f"""SELECT b.*, s.rank FROM budgets b
            JOIN unnest($1::text[], $2::text[]) WITH ORDINALITY AS s(scope_type, scope_id, rank)
              ON b.scope_type = s.scope_type AND b.scope_id = s.scope_id
            WHERE b.starts_at <= $3 ORDER BY b.id{" FOR UPDATE OF b" if lock else ""}""",
        [t for t, _ in scopes],
        [i for _, i in scopes],
        at,
    )
    return sorted(rows, key=lambda r: (r["rank"], r["created_at"]))


@dataclass(frozen=True)
class PeriodRow:
    start: datetime
    end: datetime | None
    spent: Decimal
    reserved: Decimal
    costs: int


def bounds_of(budget: asyncpg.Record, at: datetime) -> tuple[datetime, datetime | None]:
    return period_bounds(Period(budget["period"]), budget["timezone"], budget["starts_at"], at)


async def states_of(
    conn: Connection,
    budgets: list[asyncpg.Record],
    at: datetime,
    periods: list[tuple[datetime, datetime | None]] | None = None,
) -> list[tuple[BudgetState, PeriodRow]]:
    """Each budget in the period of ``at`` (or in the given ``periods``, (start, end) each): spend,
    holds and limit with the extensions in force at ``at`` — one query."""
    if not budgets:
        return []
    bounds = periods if periods is not None else [bounds_of(b, at) for b in budgets]
    rows = await conn.fetch(
        """SELECT k.i, p.spent_usd, p.reserved_usd, p.costs_recorded,
                  (SELECT coalesce(sum(e.amount_usd), 0) FROM extensions e
                    WHERE e.budget_id = k.budget_id AND e.created_at <= $3 AND e.expires_at > $3) AS extra
           FROM unnest($1::uuid[], $2::timestamptz[]) WITH ORDINALITY AS k(budget_id, period_start, i)
           LEFT JOIN budget_periods p ON p.budget_id = k.budget_id AND p.period_start = k.period_start""",
        [b["id"] for b in budgets],
        [start for start, _ in bounds],
        at,
    )
    by_index = {r["i"]: r for r in rows}
    out = []
    for i, (budget, (start, end)) in enumerate(zip(budgets, bounds, strict=True), start=1):
        row = by_index[i]
        period = PeriodRow(
            start, end, row["spent_usd"] or ZERO, row["reserved_usd"] or ZERO, row["costs_recorded"] or 0
        )
        state = BudgetState(
            budget_id=str(budget["id"]),
            name=budget["name"],
            scope_type=budget["scope_type"],
            scope_id=budget["scope_id"],
            hard=budget["hard"],
            limit=Decimal(budget["limit_usd"]) + Decimal(row["extra"]),
            spent=period.spent,
            reserved=period.reserved,
            max_cost_per_request=budget["max_cost_per_request"],
            thresholds=thresholds_of(budget["thresholds"]),
        )
        out.append((state, period))
    return out


async def add_to_periods(
    conn: Connection,
    changes: list[tuple[UUID, PeriodRow]],
    *,
    spent: Decimal = ZERO,
    reserved: Decimal = ZERO,
    costs: int = 0,
) -> None:
    """Add the same spend / holds / count to several (budget, period) rows — one statement."""
    if not changes:
        return
    await conn.execute(
        """INSERT INTO budget_periods AS p
               (budget_id, period_start, period_end, spent_usd, reserved_usd, costs_recorded)
           SELECT k.budget_id, k.period_start, k.period_end, greatest($4::numeric, 0), greatest($5::numeric, 0), $6
           FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[]) AS k(budget_id, period_start, period_end)
           ORDER BY k.budget_id
           ON CONFLICT (budget_id, period_start) DO UPDATE SET
               spent_usd = greatest(p.spent_usd + $4::numeric, 0),
               reserved_usd = greatest(p.reserved_usd + $5::numeric, 0),
               costs_recorded = p.costs_recorded + $6,
               updated_at = now()""",
        [budget_id for budget_id, _ in changes],
        [period.start for _, period in changes],
        [period.end for _, period in changes],
        spent,
        reserved,
        costs,
    )


def restrictions_model(r: Restrictions) -> CostRestrictions:
    return CostRestrictions(
        model_downgrading=r.model_downgrading,
        restricted_models=sorted(r.restricted_models),
        max_tier=r.max_tier,
        max_cost_per_request=r.max_cost_per_request,
        block_non_essential=r.block_non_essential,
        approval_required=r.approval_required,
    )


async def unqualified_budgets(conn: Connection) -> list[tuple[UUID, str, str]]:
    """Budgets on a team, user or workspace named without its org (left by migration 0004 when no
    org was known): no task's scope chain names them."""
    rows = await conn.fetch(
        "SELECT id, scope_type, scope_id FROM budgets WHERE scope_type <> 'org' AND position('/' IN scope_id) = 0"
    )
    return [(r["id"], r["scope_type"], r["scope_id"]) for r in rows]


# ------------------------------------------------------------------ reservations


async def reserve(conn: Connection, req: ReserveBudget, now: datetime, ttl: timedelta) -> Reservation:
    """Hold the amount on every budget of the chain, atomically, or refuse with the reason.

    A task's attempt that already holds a reservation gets the same answer again. Locks are taken
    in the one order every writer uses: the attempt, its budgets by id, then its reservation row.
    """
    task_id, attempt = req.task_id, req.attempt
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"reserve:{task_id}:{attempt}")
    budgets = await chain_budgets(conn, req.scope.chain(), now, lock=True)
    find = "SELECT * FROM reservations WHERE task_id = $1 AND attempt = $2"
    existing = await conn.fetchrow(find + " FOR UPDATE", task_id, attempt)
    if existing is not None and existing["status"] == "held" and existing["expires_at"] <= now:
        await close_reservation(conn, task_id, "expired", attempt=attempt)  # past its time, whatever the sweeper did
        existing = await conn.fetchrow(find, task_id, attempt)
    if existing is not None and existing["status"] == "settled":  # its cost replaced its hold: no second one
        return Reservation(
            task_id=task_id,
            admitted=False,
            amount_usd=req.amount_usd,
            reason="already_settled",
            detail=f"task {task_id} (attempt {attempt}) was settled: its cost is recorded; it cannot reserve again",
            restrictions=CostRestrictions(),
        )
    if existing is not None and existing["status"] == "held":
        return Reservation(
            task_id=req.task_id,
            admitted=True,
            reservation_id=existing["reservation_id"],
            amount_usd=existing["amount_usd"],
            expires_at=existing["expires_at"],
            detail="already reserved (held)",
            restrictions=CostRestrictions(),
        )
    if existing is not None:  # released or expired: it may hold again
        await conn.execute("DELETE FROM reservations WHERE task_id = $1 AND attempt = $2", task_id, attempt)
    states = await states_of(conn, budgets, now)
    approvers = await approvers_of(conn, req.task_id)
    verdict = admit([s for s, _ in states], req.amount_usd, req.model, req.tier, approvers=approvers)
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
    held = [(budget["id"], period) for budget, (_, period) in zip(budgets, states, strict=True)]
    await conn.execute(
        """WITH r AS (INSERT INTO reservations (task_id, attempt, reservation_id, model, amount_usd, status, expires_at)
                      VALUES ($1, $8, $2, $3, $4, 'held', $5))
           INSERT INTO reservation_holds (task_id, attempt, budget_id, period_start, amount_usd)
           SELECT $1, $8, k.budget_id, k.period_start, $4
           FROM unnest($6::uuid[], $7::timestamptz[]) AS k(budget_id, period_start)""",
        req.task_id,
        reservation_id,
        req.model,
        req.amount_usd,
        expires_at,
        [budget_id for budget_id, _ in held],
        [period.start for _, period in held],
        attempt,
    )
    await add_to_periods(conn, held, reserved=req.amount_usd)
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


async def close_reservation(
    conn: Connection,
    task_id: UUID,
    status: str,
    *,
    attempt: int = 1,
    expired_before: datetime | None = None,
) -> tuple[str | None, str | None]:
    """Give back a held reservation's holds (one attempt of a task). Returns (status before,
    status after); (None, None) when there is no reservation. With ``expired_before``, only a
    reservation that expired by then.

    Lock order, as everywhere: the attempt's budgets by id, then the reservation row.
    """
    await conn.execute(
        "SELECT 1 FROM budgets WHERE id IN"
        " (SELECT budget_id FROM reservation_holds WHERE task_id = $1 AND attempt = $2) ORDER BY id FOR UPDATE",
        task_id,
        attempt,
    )
    row = await conn.fetchrow(
        "SELECT status, expires_at FROM reservations WHERE task_id = $1 AND attempt = $2 FOR UPDATE", task_id, attempt
    )
    if row is None:
        return None, None
    before = str(row["status"])
    if before != "held" or (expired_before is not None and row["expires_at"] > expired_before):
        return before, before
    await conn.execute(
        """UPDATE budget_periods p SET reserved_usd = greatest(p.reserved_usd - h.amount_usd, 0), updated_at = now()
           FROM reservation_holds h
           WHERE h.task_id = $1 AND h.attempt = $2 AND p.budget_id = h.budget_id AND p.period_start = h.period_start""",
        task_id,
        attempt,
    )
    await conn.execute(
        "UPDATE reservations SET status = $3, closed_at = now() WHERE task_id = $1 AND attempt = $2",
        task_id,
        attempt,
        status,
    )
    return before, status


async def attempt_of(conn: Connection, task_id: UUID, reservation_id: UUID) -> int | None:
    """Which attempt of the task this reservation is (None: the task has no such reservation)."""
    found: int | None = await conn.fetchval(
        "SELECT attempt FROM reservations WHERE task_id = $1 AND reservation_id = $2", task_id, reservation_id
    )
    return found


async def expired_reservations(
    conn: asyncpg.Pool | Connection, now: datetime, limit: int = 100
) -> list[tuple[UUID, int]]:
    """Held reservations (task, attempt) past their time (each is then closed in its own transaction)."""
    rows = await conn.fetch(
        "SELECT task_id, attempt FROM reservations WHERE status = 'held' AND expires_at < $1"
        " ORDER BY expires_at LIMIT $2",
        now,
        limit,
    )
    return [(r["task_id"], r["attempt"]) for r in rows]


# ------------------------------------------------------------------ settlement


async def settle(conn: Connection, event: CostRecorded) -> list[tuple[str, BudgetAlert]]:
    """Charge a recorded cost to every budget of its chain, in the period of its own timestamp.

    The task's hold is given back first (the actual cost replaces it). Returns the alerts to
    publish: thresholds reached for the first time in that period.
    """
    scope, at = event.scope, event.occurred_at
    await adjustments.lock(conn, event.event_id)  # before any other: an adjustment of it takes it first too
    budgets = await chain_budgets(conn, scope.chain(), at)
    holds = await conn.fetch(
        "SELECT budget_id FROM reservation_holds WHERE task_id = $1 AND attempt = $2", event.task_id, event.attempt
    )
    await lock_budgets(conn, sorted({b["id"] for b in budgets} | {h["budget_id"] for h in holds}))
    await close_reservation(conn, event.task_id, "settled", attempt=event.attempt)  # the actual replaces the hold
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
    chain = scope.chain()
    await conn.execute(
        """INSERT INTO scope_spend AS s (scope_type, scope_id, spent_usd, costs_recorded)
           SELECT k.scope_type, k.scope_id, $3, 1 FROM unnest($1::text[], $2::text[]) AS k(scope_type, scope_id)
           ON CONFLICT (scope_type, scope_id) DO UPDATE SET spent_usd = s.spent_usd + EXCLUDED.spent_usd,
               costs_recorded = s.costs_recorded + 1, updated_at = now()""",
        [t for t, _ in chain],
        [i for _, i in chain],
        event.cost_usd,
    )
    alerts = await _charge(conn, event, budgets) if budgets else []
    # its adjustments that came first (parked) apply now, in order
    return alerts + _flat(await adjustments.drain(conn, event.event_id, 0, lambda e: _apply_adjustment(conn, e)))


async def _charge(
    conn: Connection, event: CostRecorded, budgets: list[asyncpg.Record]
) -> list[tuple[str, BudgetAlert]]:
    """Charge the cost to its chain's budgets in the period of its timestamp; the alerts it raises."""
    scope, at = event.scope, event.occurred_at
    states = await states_of(conn, budgets, at)
    charged = [(budget["id"], period) for budget, (_, period) in zip(budgets, states, strict=True)]
    await add_to_periods(conn, charged, spent=event.cost_usd, costs=1)
    await conn.execute(
        """INSERT INTO budget_charges (event_id, budget_id, period_start, amount_usd)
           SELECT $1, k.budget_id, k.period_start, $4
           FROM unnest($2::uuid[], $3::timestamptz[]) AS k(budget_id, period_start)""",
        event.event_id,
        [b for b, _ in charged],
        [p.start for _, p in charged],
        event.cost_usd,
    )
    return await _alerts(
        conn,
        [(b, state, period, state.spent + event.cost_usd) for b, (state, period) in zip(budgets, states, strict=True)],
        org_id=scope.org_id,
        cause=event.event_id,
    )


async def _alerts(
    conn: Connection,
    budgets: list[tuple[asyncpg.Record, BudgetState, PeriodRow, Decimal]],
    *,
    org_id: str,
    cause: UUID,
) -> list[tuple[str, BudgetAlert]]:
    """The alerts of the thresholds each (budget, its state, period, spend now) has reached, for
    those reached for the first time in that period (recorded in ``alerts_fired``)."""
    candidates: list[tuple[str, BudgetAlert]] = []
    for budget, state, period, spent in budgets:
        percent = percent_of(spent, state.limit)
        reached = in_force(state.thresholds, percent)
        in_force_now = sorted({a.value for t in reached for a in t.actions})
        candidates += [
            (
                budget["scope_type"],
                BudgetAlert(
                    budget_id=budget["id"],
                    budget_name=budget["name"],
                    scope_type=budget["scope_type"],
                    scope_id=budget["scope_id"],
                    org_id=org_id,
                    period_start=period.start,
                    period_end=period.end,
                    threshold_percent=threshold.percent,
                    spent_usd=spent,
                    limit_usd=state.limit,
                    percent=shown(percent),
                    actions=[a.value for a in threshold.actions],
                    actions_in_force=in_force_now,
                    cause_event_id=cause,
                ),
            )
            for threshold in reached
        ]
    if not candidates:
        return []
    first = await conn.fetch(
        """INSERT INTO alerts_fired (budget_id, period_start, threshold, alert_event_id, cause_event_id)
           SELECT k.budget_id, k.period_start, k.threshold, k.alert_event_id, $5
           FROM unnest($1::uuid[], $2::timestamptz[], $3::int[], $4::uuid[])
                AS k(budget_id, period_start, threshold, alert_event_id)
           ON CONFLICT DO NOTHING RETURNING alert_event_id""",
        [a.budget_id for _, a in candidates],
        [a.period_start for _, a in candidates],
        [a.threshold_percent for _, a in candidates],
        [a.event_id for _, a in candidates],
        cause,
    )
    fired = {r["alert_event_id"] for r in first}
    return [(kind, alert) for kind, alert in candidates if alert.event_id in fired]


async def adjust(conn: Connection, event: CostAdjusted) -> list[tuple[str, BudgetAlert]]:
    """Move a recorded cost by the adjustment's delta, where it was charged: the ledger, the spend
    of its scope chain, and each budget in the period it was charged to (not the current one).

    Adjustments of one cost apply in their order (``sequence``), after the cost: one that comes
    early is parked until then (``routewise.runtime.adjustments``). A positive delta may cross
    thresholds: their alerts are raised (once per period, as for a cost). A negative one raises
    none and takes none back: an alert raised stays raised, and that threshold will not alert again
    in that period. Returns the alerts to publish.
    """
    await adjustments.lock(conn, event.cost_event_id)
    applied = await conn.fetchval("SELECT adjustments FROM spend_ledger WHERE event_id = $1", event.cost_event_id)
    return _flat(await adjustments.in_order(conn, event, applied, lambda e: _apply_adjustment(conn, e)))


def _flat(alerts: list[list[tuple[str, BudgetAlert]]]) -> list[tuple[str, BudgetAlert]]:
    return [alert for some in alerts for alert in some]


async def _apply_adjustment(conn: Connection, event: CostAdjusted) -> list[tuple[str, BudgetAlert]]:
    """The delta in the spend ledger, the scopes' spend and the very (budget, period) rows the cost
    was charged to (``budget_charges``): the period is never computed again, so a budget whose time
    zone changed since moves the period it charged, not another."""
    at = await conn.fetchval("SELECT occurred_at FROM spend_ledger WHERE event_id = $1", event.cost_event_id)
    charges = await conn.fetch(
        """SELECT c.budget_id, c.period_start, p.period_end FROM budget_charges c
           LEFT JOIN budget_periods p USING (budget_id, period_start)
           WHERE c.event_id = $1 ORDER BY c.budget_id""",
        event.cost_event_id,
    )
    await lock_budgets(conn, sorted({c["budget_id"] for c in charges}))
    delta = event.delta_usd
    await conn.execute(
        "UPDATE spend_ledger SET cost_usd = cost_usd + $2, adjustments = $3 WHERE event_id = $1",
        event.cost_event_id,
        delta,
        event.sequence,
    )
    chain = event.scope.chain()
    await conn.execute(
        """UPDATE scope_spend s SET spent_usd = s.spent_usd + $3, updated_at = now()
           FROM unnest($1::text[], $2::text[]) AS k(scope_type, scope_id)
           WHERE s.scope_type = k.scope_type AND s.scope_id = k.scope_id""",
        [t for t, _ in chain],
        [i for _, i in chain],
        delta,
    )
    await conn.execute(
        "UPDATE budget_charges SET amount_usd = amount_usd + $2 WHERE event_id = $1", event.cost_event_id, delta
    )
    await conn.execute(
        """INSERT INTO budget_audit (actor, action, task_id, before, after) VALUES ($1, 'adjust_cost', $2, $3, $4)""",
        event.actor,
        event.task_id,
        {"cost_event_id": str(event.cost_event_id), "cost_usd": fixed_point(event.previous_cost_usd)},
        {
            "adjustment_id": str(event.event_id),
            "cost_usd": fixed_point(event.cost_usd),
            "delta_usd": fixed_point(delta),
            "void": event.void,
            "reason": event.reason,
            "scope": event.scope.model_dump(mode="json"),  # the task's scope: the row shows in its audit
        },
    )
    if not charges:
        return []
    rows = await conn.fetch(
        "SELECT * FROM budgets WHERE id = ANY($1::uuid[]) ORDER BY id", [c["budget_id"] for c in charges]
    )
    by_id = {b["id"]: b for b in rows}
    charged = [(by_id[c["budget_id"]], c) for c in charges if c["budget_id"] in by_id]
    budgets = [b for b, _ in charged]
    periods = [(c["period_start"], c["period_end"] or bounds_of(b, c["period_start"])[1]) for b, c in charged]
    states = await states_of(conn, budgets, at, periods)
    await add_to_periods(conn, [(b["id"], period) for b, (_, period) in zip(budgets, states, strict=True)], spent=delta)
    if delta <= 0:
        return []
    return await _alerts(
        conn,
        [(b, state, period, state.spent + delta) for b, (state, period) in zip(budgets, states, strict=True)],
        org_id=event.scope.org_id,
        cause=event.event_id,
    )


# ------------------------------------------------------------------ status


async def status(conn: Connection, scopes: list[tuple[str, str]], now: datetime) -> BudgetStatus:
    views: list[BudgetView] = []
    merged = Restrictions()
    tightest: tuple[Decimal, Decimal] | None = None  # (remaining, limit)
    budgets = await chain_budgets(conn, scopes, now)
    for budget, (state, period) in zip(budgets, await states_of(conn, budgets, now), strict=True):
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
                percent_used=shown(state.percent),
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
        raise RoutewiseError(f"no budget {budget_id}", code=ErrorCode.not_found)
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
    if req.timezone is not None and req.timezone != before.timezone:
        in_use = await conn.fetchval("SELECT 1 FROM budget_periods WHERE budget_id = $1 LIMIT 1", req.budget_id)
        if in_use and before.period != "total":
            raise RoutewiseError(
                "the time zone of a budget in use cannot change (its periods would restart at zero);"
                " create a new budget instead",
                code=ErrorCode.invalid_request,
            )
        changes["timezone"] = req.timezone
    if req.max_cost_per_request is not None:
        changes["max_cost_per_request"] = req.max_cost_per_request
    elif req.clear_max_cost_per_request:
        changes["max_cost_per_request"] = None
    if req.thresholds is not None:
        changes["thresholds"] = thresholds_json(req.thresholds)
    if not changes:
        raise RoutewiseError("nothing to change: give at least one new value", code=ErrorCode.invalid_request)
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


async def list_budgets(conn: Connection, req: ListBudgets) -> list[Budget]:
    rows = await conn.fetch(
        """SELECT * FROM budgets WHERE ($1::text IS NULL OR scope_type = $1) AND ($2::text IS NULL OR scope_id = $2)
               AND ($3::text IS NULL OR split_part(scope_id, '/', 1) = $3)
           ORDER BY scope_type, scope_id, created_at""",
        req.scope_type,
        req.scope_id,
        req.org_id,
    )
    return [await get_budget(conn, r["id"]) for r in rows]


async def approvers_of(conn: Connection, task_id: UUID) -> list[Scope | None]:
    """Who approved the task: each approval's approver scope (None: the operator's, every gate)."""
    rows = await conn.fetch("SELECT approver_scope FROM approvals WHERE task_id = $1", task_id)
    return [None if r["approver_scope"] is None else Scope.model_validate(r["approver_scope"]) for r in rows]


async def chain_states(conn: Connection, scope: Scope, at: datetime) -> list[BudgetState]:
    """The budgets of the scope's chain in their period of ``at``, narrowest first (no locks)."""
    return [state for state, _ in await states_of(conn, await chain_budgets(conn, scope.chain(), at), at)]


async def approve(conn: Connection, req: ApproveTask) -> Approval:
    """One approval per task and approver scope (approving again replaces its actor and reason):
    the task is let past the gates every one of them lifts."""
    approver = req.approver_scope.model_dump(mode="json") if req.approver_scope is not None else None
    row = await conn.fetchrow(
        """INSERT INTO approvals (task_id, actor, reason, approver_scope)
           VALUES ($1, $2, $3, COALESCE($4::jsonb, 'null'::jsonb))
           ON CONFLICT (task_id, approver_scope) DO UPDATE SET actor = EXCLUDED.actor, reason = EXCLUDED.reason
           RETURNING task_id, actor, reason, created_at""",
        req.task_id,
        req.actor,
        req.reason,
        approver,
    )
    assert row is not None
    approval = Approval(**dict(row), scope=req.scope, approver_scope=req.approver_scope)
    await audit(conn, req.actor, "approve", task_id=req.task_id, after=approval)
    return approval


async def extend(conn: Connection, req: ExtendBudget, now: datetime) -> Budget:
    if req.until <= now:
        raise RoutewiseError(
            f"an extension must end in the future, not {req.until.isoformat()}", code=ErrorCode.invalid_request
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


# ------------------------------------------------------------------ history


async def alert_history(conn: Connection, req: ListAlerts) -> AlertHistory:
    """The alerts fired (one per budget, period and threshold), newest first."""
    rows = await conn.fetch(
        """SELECT f.alert_event_id, f.budget_id, b.name, b.scope_type, b.scope_id, f.period_start, f.threshold,
                  b.thresholds, f.fired_at, f.cause_event_id
           FROM alerts_fired f JOIN budgets b ON b.id = f.budget_id
           WHERE ($1::text IS NULL OR split_part(b.scope_id, '/', 1) = $1)
             AND ($2::text IS NULL OR (b.scope_type = $2 AND b.scope_id = $3))
             AND ($4::uuid IS NULL OR f.budget_id = $4)
           ORDER BY f.fired_at DESC, f.threshold DESC LIMIT $5""",
        req.org_id,
        req.scope_type,
        req.scope_id,
        req.budget_id,
        req.limit,
    )
    return AlertHistory(
        alerts=[
            FiredAlert(
                alert_event_id=r["alert_event_id"],
                budget_id=r["budget_id"],
                budget_name=r["name"],
                scope_type=r["scope_type"],
                scope_id=r["scope_id"],
                period_start=r["period_start"],
                threshold_percent=r["threshold"],
                actions=next((list(t["actions"]) for t in r["thresholds"] if t["percent"] == r["threshold"]), []),
                fired_at=r["fired_at"],
                cause_event_id=r["cause_event_id"],
            )
            for r in rows
        ]
    )


_AUDIT_SCOPE_TYPE = "COALESCE(after->>'scope_type', before->>'scope_type')"
_AUDIT_SCOPE_ID = "COALESCE(after->>'scope_id', before->>'scope_id')"
"""A budget row's scope, from the budget it recorded (an approval's task scope is ``after->'scope'``)."""


async def audit_log(conn: Connection, req: ListBudgetAudit) -> BudgetAuditLog:
    """Audit rows, newest first. A scope filter keeps the rows of budgets on exactly that scope and
    the approvals of tasks whose scope includes it (an approval records its task's scope when the
    approver named it)."""
    rows = await conn.fetch(
        f"""SELECT id, at, actor, action, budget_id, task_id, {_AUDIT_SCOPE_TYPE} AS scope_type,
                   {_AUDIT_SCOPE_ID} AS scope_id, after->'scope' AS task_scope, before, after
            FROM budget_audit
            WHERE ($1::text IS NULL OR COALESCE(split_part({_AUDIT_SCOPE_ID}, '/', 1), after->'scope'->>'org_id') = $1)
              AND ($2::text IS NULL
                   OR ({_AUDIT_SCOPE_TYPE} = $2 AND {_AUDIT_SCOPE_ID} = $3)
                   OR (after->'scope'->>'org_id' = split_part($3, '/', 1)
                       AND ($2 = 'org' OR after->'scope'->>($2 || '_id') = split_part($3, '/', 2))))
              AND ($4::uuid IS NULL OR budget_id = $4)
              AND ($5::uuid IS NULL OR task_id = $5)
              AND ($6::bigint IS NULL OR id < $6)
            ORDER BY id DESC LIMIT $7""",
        req.org_id,
        req.scope_type,
        req.scope_id,
        req.budget_id,
        req.task_id,
        req.before_id,
        req.limit,
    )
    return BudgetAuditLog(
        entries=[
            AuditEntry(
                id=r["id"],
                at=r["at"],
                actor=r["actor"],
                action=r["action"],
                budget_id=r["budget_id"],
                task_id=r["task_id"],
                scope_type=r["scope_type"],
                scope_id=r["scope_id"],
                task_scope=r["task_scope"],
                before=r["before"],
                after=r["after"],
            )
            for r in rows
        ]
    )
