"""What the selector asks other services while it decides, behind two small interfaces.

``Quotes`` is cost-predictor's ``cost.estimate``; ``Budgets`` is budget-enforcer's reserve,
release and status. The handlers know only these interfaces: the service plugs in the bus
implementations below, a test plugs in in-memory twins. Either way a refusal by the other
service is a ``RemoteError`` carrying its code (``unknown_model``, ``context_window_exceeded``,
...), and "nobody answered" is a ``RemoteError`` coded ``unavailable`` or ``timeout``.
"""

from __future__ import annotations

from typing import Protocol

from routewise.contracts.budget import (
    BudgetStatus,
    GetBudgetStatus,
    ReleaseBudget,
    Released,
    Reservation,
    ReserveBudget,
)
from routewise.contracts.cost import CostEstimate, EstimateCost
from routewise.runtime.bus import BusPort


class Quotes(Protocol):
    """Prices a prompt on a set of models (cost-predictor)."""

    async def estimate(self, request: EstimateCost) -> CostEstimate: ...


class Budgets(Protocol):
    """Holds, releases and reports the budgets of a scope chain (budget-enforcer)."""

    async def reserve(self, request: ReserveBudget) -> Reservation: ...

    async def release(self, request: ReleaseBudget) -> Released: ...

    async def status(self, request: GetBudgetStatus) -> BudgetStatus: ...


class BusQuotes(BusPort):
    """``Quotes`` over request/reply on ``cost.estimate``."""

    async def estimate(self, request: EstimateCost) -> CostEstimate:
        return await self.ask(self.subjects.cost_estimate, request, CostEstimate)


class BusBudgets(BusPort):
    """``Budgets`` over request/reply on ``budget.reserve``, ``budget.release`` and ``budget.status``."""

    async def reserve(self, request: ReserveBudget) -> Reservation:
        return await self.ask(self.subjects.budget_reserve, request, Reservation)

    async def release(self, request: ReleaseBudget) -> Released:
        return await self.ask(self.subjects.budget_release, request, Released)

    async def status(self, request: GetBudgetStatus) -> BudgetStatus:
        return await self.ask(self.subjects.budget_status, request, BudgetStatus)
