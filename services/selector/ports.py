"""What the selector asks other services while it decides, behind two small interfaces.

``Quotes`` is cost-predictor's ``cost.estimate``; ``Budgets`` is budget-enforcer's reserve,
release and status. The handlers know only these interfaces: the service plugs in the bus
implementations below, a test plugs in in-memory twins. Either way a refusal by the other
service is a ``RemoteError`` carrying its code (``unknown_model``, ``context_window_exceeded``,
...), and "nobody answered" is a ``RemoteError`` coded ``unavailable`` or ``timeout``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from faststream.nats import NatsBroker

from routewise.contracts.budget import (
    BudgetStatus,
    GetBudgetStatus,
    ReleaseBudget,
    Released,
    Reservation,
    ReserveBudget,
)
from routewise.contracts.cost import CostEstimate, EstimateCost
from routewise.contracts.subjects import Subjects
from routewise.runtime import bus


class Quotes(Protocol):
    """Prices a prompt on a set of models (cost-predictor)."""

    async def estimate(self, request: EstimateCost) -> CostEstimate: ...


class Budgets(Protocol):
    """Holds, releases and reports the budgets of a scope chain (budget-enforcer)."""

    async def reserve(self, request: ReserveBudget) -> Reservation: ...

    async def release(self, request: ReleaseBudget) -> Released: ...

    async def status(self, request: GetBudgetStatus) -> BudgetStatus: ...


@dataclass(frozen=True)
class BusQuotes:
    """``Quotes`` over request/reply on ``cost.estimate``."""

    broker: NatsBroker
    subjects: Subjects
    timeout: float

    async def estimate(self, request: EstimateCost) -> CostEstimate:
        return await bus.request(self.broker, self.subjects.cost_estimate, request, CostEstimate, timeout=self.timeout)


@dataclass(frozen=True)
class BusBudgets:
    """``Budgets`` over request/reply on ``budget.reserve``, ``budget.release`` and ``budget.status``."""

    broker: NatsBroker
    subjects: Subjects
    timeout: float

    async def reserve(self, request: ReserveBudget) -> Reservation:
        return await bus.request(self.broker, self.subjects.budget_reserve, request, Reservation, timeout=self.timeout)

    async def release(self, request: ReleaseBudget) -> Released:
        return await bus.request(self.broker, self.subjects.budget_release, request, Released, timeout=self.timeout)

    async def status(self, request: GetBudgetStatus) -> BudgetStatus:
        return await bus.request(self.broker, self.subjects.budget_status, request, BudgetStatus, timeout=self.timeout)
