"""What cost-predictor asks of, or tells, the rest of the system: budget-enforcer's status of a
scope, the notice that the price overrides or the registered models changed, and the live
catalog it publishes. Handlers see ``CostBus`` and ``CatalogStore``; ``NatsCostBus`` and
``KvCatalogStore`` are the real ones, built at start-up; tests use in-memory twins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from faststream.nats import NatsBroker
from nats.js.kv import KeyValue

from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
from routewise.contracts.catalog import PublishedCatalog
from routewise.runtime.bus import BusPort, ensure_bucket
from routewise.runtime.catalog import publish_catalog

BUDGET_TIMEOUT_S = 0.5
"""An estimate does not wait long for the budget: without an answer it comes without budget impact."""


class CostBus(Protocol):
    async def budget_status(self, req: GetBudgetStatus) -> BudgetStatus:
        """budget-enforcer's status of the scope chain; ``RemoteError`` (its code, ``timeout`` or
        ``unavailable``) when it does not answer with one."""
        ...

    async def announce_prices_changed(self) -> None:
        """Tell every replica, this one included, to reload the price overrides and the registered models."""
        ...


class NatsCostBus(BusPort):
    async def budget_status(self, req: GetBudgetStatus) -> BudgetStatus:
        return await self.ask(self.subjects.budget_status, req, BudgetStatus)

    async def announce_prices_changed(self) -> None:
        await self.broker.publish(b"", self.subjects.cost_prices_changed)


class CatalogStore(Protocol):
    """Where cost-predictor publishes the live catalog for every service that uses it."""

    async def publish(self, published: PublishedCatalog, *, same_revision: bool = False) -> bool:
        """Put ``published`` unless a newer revision is there (see ``publish_catalog``)."""
        ...


@dataclass
class MemoryCatalogStore:
    """``CatalogStore`` in memory: the newest publication (for a replica built by hand)."""

    published: PublishedCatalog | None = None

    async def publish(self, published: PublishedCatalog, *, same_revision: bool = False) -> bool:
        held = self.published
        if held is not None and (
            held.revision > published.revision
            or (held.revision == published.revision and (not same_revision or held.same_content(published)))
        ):
            return False
        self.published = published
        return True


@dataclass(frozen=True)
class KvCatalogStore:
    """``CatalogStore`` of the ``<NS>_MODEL_CATALOG`` KV bucket, which cost-predictor alone writes."""

    kv: KeyValue

    @classmethod
    async def open(cls, broker: NatsBroker, bucket: str) -> KvCatalogStore:
        return cls(await ensure_bucket(broker, bucket))

    async def publish(self, published: PublishedCatalog, *, same_revision: bool = False) -> bool:
        return await publish_catalog(self.kv, published, same_revision=same_revision)
