"""What metrics asks of the rest of the system: cost-predictor's price of a baseline call.
Handlers see ``Pricer``; ``NatsPricer`` is the real one, built at start-up; tests use an
in-memory twin."""

from __future__ import annotations

from typing import Protocol

from routewise.contracts.cost import Price, PriceUsage
from routewise.runtime.bus import BusPort


class Pricer(Protocol):
    async def price(self, usage: PriceUsage) -> Price:
        """cost-predictor's price of a call (``cost.price``); ``RemoteError`` with its code when it
        refuses (``unknown_price``, ...) or does not answer (``timeout``, ``unavailable``)."""
        ...


class NatsPricer(BusPort):
    async def price(self, usage: PriceUsage) -> Price:
        return await self.ask(self.subjects.cost_price, usage, Price)
