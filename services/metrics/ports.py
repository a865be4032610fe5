"""What metrics asks of the rest of the system: cost-predictor's price of a baseline call.
Handlers see ``Pricer``; ``NatsPricer`` is the real one, built at start-up; tests use an
in-memory twin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from faststream.nats import NatsBroker

from routewise.contracts.cost import Price, PriceUsage
from routewise.contracts.subjects import Subjects
from routewise.runtime.bus import request


class Pricer(Protocol):
    async def price(self, usage: PriceUsage) -> Price:
        """cost-predictor's price of a call (``cost.price``); ``RemoteError`` with its code when it
        refuses (``unknown_price``, ...) or does not answer (``timeout``, ``unavailable``)."""
        ...


@dataclass(frozen=True)
class NatsPricer:
    broker: NatsBroker
    subjects: Subjects
    timeout: float

    async def price(self, usage: PriceUsage) -> Price:
        return await request(self.broker, self.subjects.cost_price, usage, Price, timeout=self.timeout)
