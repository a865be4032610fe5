"""In-memory twins of the bus ports of cost-predictor (``CostBus``) and metrics (``Pricer``), and
the runtime's exactly-once application of an event, for calling handlers directly."""

from __future__ import annotations

from dataclasses import dataclass, field

from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
from routewise.contracts.catalog import default_catalog
from routewise.contracts.cost import Price, PriceUsage
from routewise.contracts.errors import RemoteError, RoutewiseError
from routewise.estimates import price
from routewise.services.cost_predictor.pricing import PriceBook


@dataclass
class CostBusTwin:
    """budget-enforcer as cost-predictor sees it, and the replicas it tells of price changes."""

    statuses: dict[str, BudgetStatus] = field(default_factory=dict)
    """budget-enforcer's answer per org; an org without one gets ``down``'s error."""
    down: str = "unavailable"
    asked: list[GetBudgetStatus] = field(default_factory=list)
    announcements: int = 0

    async def budget_status(self, req: GetBudgetStatus) -> BudgetStatus:
        self.asked.append(req)
        assert req.scope is not None
        if req.scope.org_id not in self.statuses:
            raise RemoteError("budget-enforcer did not answer", code=self.down)
        return self.statuses[req.scope.org_id]

    async def announce_prices_changed(self) -> None:
        self.announcements += 1


@dataclass
class PricerTwin:
    """cost-predictor's ``cost.price``: genai-prices through its own price book, its errors as the
    error replies a client receives; ``down`` makes it a cost-predictor that does not answer."""

    book: PriceBook = field(default_factory=lambda: PriceBook(default_catalog()))
    down: bool = False
    asked: list[PriceUsage] = field(default_factory=list)

    async def price(self, usage: PriceUsage) -> Price:
        self.asked.append(usage)
        if self.down:
            raise RemoteError("no answer on cost.price within 5s", code="timeout")
        try:
            return price(self.book, usage)
        except RoutewiseError as exc:
            raise RemoteError(exc.message, code=exc.code, details=exc.details) from exc
