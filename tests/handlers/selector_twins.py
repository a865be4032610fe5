"""In-memory twins of the selector's ports, for calling its handlers without a bus.

``PricedQuotes`` prices with cost-predictor's own estimator (a test may import another
service's package; the selector never does). ``MemoryBudgets`` is one hard budget holding by
task, as budget-enforcer does. ``ListedSnapshots`` is a snapshot bucket's watch that yields a
fixed list of puts and ends.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

from routewise.contracts.budget import (
    BudgetStatus,
    CostRestrictions,
    GetBudgetStatus,
    ReleaseBudget,
    Released,
    Reservation,
    ReserveBudget,
)
from routewise.contracts.catalog import default_catalog
from routewise.contracts.cost import CostEstimate, EstimateCost
from routewise.contracts.errors import RemoteError, RoutewiseError
from routewise.estimates import Estimator
from routewise.services.cost_predictor.pricing import PriceBook


class PricedQuotes:
    """``Quotes`` at the catalog's list prices (no learnt output profiles). ``down``: requests
    fail with that code, as when cost-predictor does not answer (``down_for``: only that many)."""

    def __init__(self) -> None:
        self.estimator = Estimator(PriceBook(default_catalog()))
        self.asked: list[EstimateCost] = []
        self.down: str | None = None
        self.down_for: int | None = None

    async def estimate(self, request: EstimateCost) -> CostEstimate:
        self.asked.append(request)
        if self.down is not None and (self.down_for is None or self.down_for > 0):
            if self.down_for is not None:
                self.down_for -= 1
            raise RemoteError("cost-predictor did not answer", code=self.down)
        try:
            return self.estimator.estimate(request, self.estimator.resolve_all(request.models), {})
        except RoutewiseError as exc:  # what the bus turns cost-predictor's error reply into
            raise RemoteError.of(exc) from exc


class MemoryBudgets:
    """``Budgets``: one hard budget of ``limit_usd`` over every scope (None: no budget at all).
    A task's hold is kept until released; reserving again for a held task returns its hold."""

    def __init__(self, limit_usd: Decimal | None = None) -> None:
        self.limit_usd = limit_usd
        self.budget_id = uuid.uuid4()
        self.holds: dict[uuid.UUID, Reservation] = {}
        self.asked: list[ReserveBudget] = []
        self.status_asked = 0

    @property
    def held(self) -> Decimal:
        return sum((h.amount_usd for h in self.holds.values()), Decimal(0))

    async def reserve(self, request: ReserveBudget) -> Reservation:
        self.asked.append(request)
        if request.task_id in self.holds:
            return self.holds[request.task_id]
        if self.limit_usd is not None and self.held + request.amount_usd > self.limit_usd:
            return Reservation(
                task_id=request.task_id,
                admitted=False,
                amount_usd=request.amount_usd,
                reason="budget_exhausted",
                detail=f"hard budget: ${self.limit_usd - self.held} left",
                budget_id=self.budget_id,
                restrictions=CostRestrictions(),
            )
        hold = Reservation(
            task_id=request.task_id,
            admitted=True,
            reservation_id=uuid.uuid4(),
            amount_usd=request.amount_usd,
            detail="held",
            restrictions=CostRestrictions(),
        )
        self.holds[request.task_id] = hold
        return hold

    async def release(self, request: ReleaseBudget) -> Released:
        hold = self.holds.pop(request.task_id, None)
        return Released(task_id=request.task_id, released=hold is not None, status="released" if hold else None)

    async def status(self, request: GetBudgetStatus) -> BudgetStatus:
        self.status_asked += 1
        scope_type, scope_id = request.scopes()[-1]
        remaining = None if self.limit_usd is None else self.limit_usd - self.held
        return BudgetStatus(
            scope_type=scope_type,
            scope_id=scope_id,
            budgets=[],
            aggregate_status="ok",
            cost_restrictions=CostRestrictions(),
            spent_usd=Decimal(0),
            costs_recorded=0,
            limit_usd=self.limit_usd,
            remaining_usd=remaining,
        )


class ListedSnapshots:
    """``SnapshotFeed`` whose content is ``puts`` (and whose watch yields them and ends)."""

    def __init__(self, *puts: tuple[str, bytes | None]) -> None:
        self.puts = list(puts)

    async def watch(self) -> AsyncIterator[tuple[str, bytes | None]]:
        for key, value in self.puts:
            yield key, value

    async def current(self) -> list[tuple[str, bytes | None]]:
        return list(self.puts)
