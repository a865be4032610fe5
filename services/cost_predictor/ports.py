"""What cost-predictor asks of, or tells, the rest of the system: budget-enforcer's status of a
scope, and the notice that the price overrides changed. Handlers see ``CostBus``; ``NatsCostBus``
is the real one, built at start-up; tests use an in-memory twin."""

from __future__ import annotations

from typing import Protocol

from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
from routewise.runtime.bus import BusPort

BUDGET_TIMEOUT_S = 0.5
"""An estimate does not wait long for the budget: without an answer it comes without budget impact."""


class CostBus(Protocol):
    async def budget_status(self, req: GetBudgetStatus) -> BudgetStatus:
        """budget-enforcer's status of the scope chain; ``RemoteError`` (its code, ``timeout`` or
        ``unavailable``) when it does not answer with one."""
        ...

    async def announce_prices_changed(self) -> None:
        """Tell every replica, this one included, to reload the price overrides."""
        ...


class NatsCostBus(BusPort):
    async def budget_status(self, req: GetBudgetStatus) -> BudgetStatus:
        return await self.ask(self.subjects.budget_status, req, BudgetStatus)

    async def announce_prices_changed(self) -> None:
        await self.broker.publish(b"", self.subjects.cost_prices_changed)
