"""What cost-predictor asks of, or tells, the rest of the system: budget-enforcer's status of a
scope, the notice that the price overrides or the registered models changed, the live
catalog and the output profiles it publishes. Handlers see ``CostBus``, ``CatalogStore`` and
``ProfileStore``; ``NatsCostBus``, ``KvCatalogStore`` and ``KvProfileStore`` are the real ones,
built at start-up; tests use in-memory twins."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from faststream.nats import NatsBroker
from nats.js.kv import KeyValue

from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
from routewise.contracts.catalog import PublishedCatalog
from routewise.contracts.cost import OutputProfiles
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


class ProfileStore(Protocol):
    """Where cost-predictor publishes the output tokens learnt per model, one task type a key,
    for the selector to estimate its decisions with."""

    async def publish(self, profiles: OutputProfiles) -> None: ...


@dataclass
class MemoryProfileStore:
    """``ProfileStore`` in memory (for a replica built by hand)."""

    published: dict[str, OutputProfiles] = field(default_factory=dict)

    async def publish(self, profiles: OutputProfiles) -> None:
        self.published[profiles.task_type] = profiles


@dataclass(frozen=True)
class KvProfileStore:
    """``ProfileStore`` of the ``<NS>_OUTPUT_PROFILES`` KV bucket, which cost-predictor alone writes
    (the key is the task type: a contract-bounded ``[a-z][a-z0-9_]{0,63}``)."""

    kv: KeyValue

    @classmethod
    async def open(cls, broker: NatsBroker, bucket: str) -> KvProfileStore:
        return cls(await ensure_bucket(broker, bucket))

    async def publish(self, profiles: OutputProfiles) -> None:
        await self.kv.put(profiles.task_type, profiles.model_dump_json().encode())
