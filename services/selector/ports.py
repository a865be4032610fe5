"""What the selector needs of other services while it decides, behind two small interfaces.

``Quotes`` prices a prompt on a policy's models: ``LocalQuotes`` does it in this process with the
function cost-predictor answers ``cost.estimate`` with (``routewise.estimates``), from what
cost-predictor publishes (the live catalog's prices, the output profiles), so no decision asks
it anything. ``Budgets`` is budget-enforcer's reserve, release and status, over the bus. The
handlers know only these interfaces; a test plugs in in-memory twins. Either way a refusal is a
``RemoteError`` carrying its code (``unknown_model``, ``context_window_exceeded``, ...), and
"nobody answered" is a ``RemoteError`` coded ``unavailable`` or ``timeout``.
"""

from __future__ import annotations

from typing import Protocol

import structlog
from pydantic import ValidationError

from routewise.contracts.budget import (
    BudgetStatus,
    GetBudgetStatus,
    ReleaseBudget,
    Released,
    Reservation,
    ReserveBudget,
)
from routewise.contracts.cost import CostEstimate, EstimateCost, OutputProfiles
from routewise.contracts.errors import RemoteError, RoutewiseError
from routewise.estimates import Estimator
from routewise.runtime.bus import BusPort
from routewise.runtime.catalog import CatalogView
from routewise.services.selector.snapshots import Mirror

log = structlog.get_logger(__name__)


class Quotes(Protocol):
    """Prices a prompt on a set of models (cost-predictor)."""

    async def estimate(self, request: EstimateCost) -> CostEstimate: ...


class Budgets(Protocol):
    """Holds, releases and reports the budgets of a scope chain (budget-enforcer)."""

    async def reserve(self, request: ReserveBudget) -> Reservation: ...

    async def release(self, request: ReleaseBudget) -> Released: ...

    async def status(self, request: GetBudgetStatus) -> BudgetStatus: ...


class LocalQuotes(Mirror):
    """``Quotes`` priced here: ``routewise.estimates.Estimator`` over the live catalog's price book
    (``use``, at each revision) and the output profiles of cost-predictor's bucket (a ``Mirror``;
    a value that does not parse is logged and the last good one kept). ``revision``: the
    catalog revision the prices are of."""

    def __init__(self, view: CatalogView) -> None:
        self.use(view)
        self.profiles: dict[str, dict[str, list[float]]] = {}

    def use(self, view: CatalogView) -> None:
        self.estimator, self.revision = Estimator(view.price_book()), view.revision

    def put(self, key: str, value: bytes | None) -> None:
        if not value:
            self.profiles.pop(key, None)
            return
        try:
            published = OutputProfiles.model_validate_json(value)
        except ValidationError as exc:
            log.warning("unreadable output profiles; the last ones are kept", key=key, error=str(exc)[:300])
            return
        self.profiles[published.task_type] = published.models

    async def estimate(self, request: EstimateCost) -> CostEstimate:
        estimator = self.estimator
        try:
            models = estimator.resolve_all(request.models)
            learnt = self.profiles.get(request.task_type, {})
            return estimator.estimate(request, models, {m.id: learnt[m.id] for m in models if m.id in learnt})
        except RoutewiseError as exc:  # as cost-predictor would have answered it
            raise RemoteError.of(exc) from exc


class BusBudgets(BusPort):
    """``Budgets`` over request/reply on ``budget.reserve``, ``budget.release`` and ``budget.status``."""

    async def reserve(self, request: ReserveBudget) -> Reservation:
        return await self.ask(self.subjects.budget_reserve, request, Reservation)

    async def release(self, request: ReleaseBudget) -> Released:
        return await self.ask(self.subjects.budget_release, request, Released)

    async def status(self, request: GetBudgetStatus) -> BudgetStatus:
        return await self.ask(self.subjects.budget_status, request, BudgetStatus)
