"""The live model catalog every service routes, prices and labels with.

cost-predictor keeps the models registered at run time and publishes the resulting catalog
(the shipped seed with the registered models, which have no price, and the deployment's price
overrides) as one value of a JetStream KV bucket (``Subjects.catalog_bucket``, key
``catalog``). Each service that uses the catalog holds a ``LiveCatalog``: the current value at
start-up, then every new one from a watch of the bucket, in memory, so no decision, call or
count waits on a request for it. Until cost-predictor has published, a service uses its own
catalog file (the seed) as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog
from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from routewise.contracts.catalog import Catalog, PublishedCatalog, default_catalog, load_catalog
from routewise.contracts.cost import PriceEntry
from routewise.pricing import Override, PriceBook
from routewise.runtime.bus import ensure_bucket
from routewise.runtime.service import every
from routewise.runtime.settings import Settings

log = structlog.get_logger(__name__)

CATALOG_KEY = "catalog"
REWATCH_S = 1.0
"""How long after a broken watch of the catalog it is started again (a service's job)."""
REFRESH_AT_MOST_EVERY_S = 1.0
"""How often a model the catalog lacks may make a service read the bucket itself."""


def seed_catalog(settings: Settings) -> Catalog:
    """The shipped catalog a service starts from: ``ROUTEWISE_CATALOG_PATH``'s file, else the built-in one."""
    return load_catalog(Path(settings.catalog_path)) if settings.catalog_path else default_catalog()


def overrides_of(entries: list[PriceEntry]) -> list[Override]:
    """The price overrides among ``entries`` (cost-predictor's list), as a price book takes them."""
    return [
        Override(
            provider=p.provider,
            model=p.model,
            input_mtok=p.input_mtok,
            output_mtok=p.output_mtok,
            cache_read_mtok=p.cache_read_mtok,
            cache_write_mtok=p.cache_write_mtok,
            context_window=p.context_window,
        )
        for p in entries
        if p.source == "override" and p.input_mtok is not None and p.output_mtok is not None
    ]


@dataclass(frozen=True)
class CatalogView:
    """One revision of the catalog, as a service uses it."""

    revision: int
    """0: the service's own seed file (nothing published yet)."""
    catalog: Catalog
    unpriced: Mapping[str, str] = field(default_factory=dict)
    """Models without a price (not routable), and why."""
    overrides: tuple[Override, ...] = ()

    @classmethod
    def seed(cls, catalog: Catalog | None = None) -> CatalogView:
        return cls(0, catalog or default_catalog())

    @classmethod
    def of(cls, published: PublishedCatalog) -> CatalogView:
        return cls(
            published.revision, published.catalog(), dict(published.unpriced), tuple(overrides_of(published.overrides))
        )

    def price_book(self) -> PriceBook:
        return PriceBook(self.catalog, list(self.overrides))

    @property
    def routable(self) -> list[str]:
        """The ids of the models that may be routed to and priced: every one with a price."""
        return [m.id for m in self.catalog.models if m.id not in self.unpriced]


class CatalogFeed(Protocol):
    """Where the published catalog comes from."""

    async def current(self) -> bytes | None:
        """The published value now (None: nothing published yet)."""
        ...

    def watch(self) -> AsyncIterator[bytes | None]:
        """The published value, then each new one (None or empty: deleted)."""
        ...


@dataclass(frozen=True)
class BucketCatalogFeed:
    """``CatalogFeed`` of cost-predictor's KV bucket."""

    kv: KeyValue

    @classmethod
    async def open(cls, broker: NatsBroker, bucket: str) -> BucketCatalogFeed:
        return cls(await ensure_bucket(broker, bucket))

    async def current(self) -> bytes | None:
        try:
            entry = await self.kv.get(CATALOG_KEY)
        except KeyNotFoundError:
            return None
        return entry.value or None

    async def watch(self) -> AsyncIterator[bytes | None]:
        watcher = await self.kv.watch(CATALOG_KEY)
        try:
            async for entry in watcher:
                if entry is not None:  # None: the watcher's mark that the current value was delivered
                    yield entry.value
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]


Listener = Callable[[CatalogView], None]


class LiveCatalog:
    """The newest published catalog (or the seed before any), and who is told of each new one.
    A value that does not parse, or is older than the one held, is logged and ignored: the
    service goes on with the catalog it has."""

    def __init__(self, feed: CatalogFeed, seed: Catalog | None = None) -> None:
        self.feed = feed
        self.view = CatalogView.seed(seed)
        self.published: PublishedCatalog | None = None
        self._listeners: list[Listener] = []
        self._refreshed = float("-inf")
        self._refreshing: asyncio.Task[bool] | None = None

    def on_change(self, listener: Listener) -> None:
        """Call ``listener(view)`` now and with each new revision (synchronously: what it sets
        changes together, between two awaits of any handler)."""
        self._listeners.append(listener)
        listener(self.view)

    def put(self, value: bytes | None) -> bool:
        """Take a published value; True when it is a newer revision than the one held."""
        if not value:
            return False  # deleted: keep what is known (cost-predictor publishes again at its start)
        try:
            published = PublishedCatalog.model_validate_json(value)
            view = CatalogView.of(published)
        except (ValidationError, ValueError) as exc:
            log.warning("unreadable published catalog; keeping the current one", error=str(exc)[:500])
            return False
        held = self.published
        if held is not None and (
            published.revision < held.revision or (published.revision == held.revision and published.same_content(held))
        ):
            return False
        previous = self.view
        self.view, self.published = view, published
        self._describe(previous, view)
        for listener in self._listeners:
            try:
                listener(view)
            except Exception:
                log.exception("a catalog listener failed", revision=view.revision)
        return True

    @staticmethod
    def _describe(previous: CatalogView, view: CatalogView) -> None:
        before = {m.id for m in previous.catalog.models}
        after = {m.id for m in view.catalog.models}
        log.info(
            "model catalog updated",
            revision=view.revision,
            models=len(after),
            added=sorted(after - before),
            removed=sorted(before - after),
        )
        for model, reason in sorted(view.unpriced.items()):
            if previous.unpriced.get(model) != reason:
                log.warning("model not routable: it has no price", model=model, reason=reason)

    async def load(self) -> None:
        """The published catalog as it is now (at start-up, before any message is handled)."""
        self.put(await self.feed.current())

    async def refresh(self, min_interval: float = REFRESH_AT_MOST_EVERY_S) -> bool:
        """Read the published catalog now, when a model this service was asked for is not in its
        catalog (registered a moment ago, before the watch delivered it): at most once per
        ``min_interval``, and never on the way of a model it knows. True when a newer one was taken."""
        now = time.monotonic()
        if now - self._refreshed < min_interval:
            return False
        self._refreshed = now
        try:
            return self.put(await self.feed.current())
        except Exception as exc:  # the bus is away: the watch catches up when it is back
            log.info("the published catalog could not be read", error=repr(exc)[:300])
            return False

    def refresh_soon(self, min_interval: float = REFRESH_AT_MOST_EVERY_S) -> None:
        """``refresh`` in the background, for a caller that must not wait on the bus (a decision):
        it goes on with the catalog it has, and what is read is used from the next one on. One
        read at a time, at most once per ``min_interval``."""
        if self._refreshing is not None and not self._refreshing.done():
            return
        if time.monotonic() - self._refreshed < min_interval:
            return
        self._refreshing = asyncio.create_task(self.refresh(min_interval), name="catalog-refresh")

    async def follow(self) -> None:
        """Take every new publication until the watch ends or breaks (the service's job starts it
        again: it begins with the current value, so nothing is missed)."""
        async for value in self.feed.watch():
            self.put(value)

    @classmethod
    async def open(cls, broker: NatsBroker, settings: Settings) -> LiveCatalog:
        """The service's live catalog: its seed, then what cost-predictor has published (the bucket
        is created if cost-predictor has not yet)."""
        live = cls(await BucketCatalogFeed.open(broker, settings.subjects.catalog_bucket), seed_catalog(settings))
        await live.load()
        return live


class WithLiveCatalog(Protocol):
    """The dependencies of a service that holds a live catalog."""

    live_catalog: LiveCatalog | None


async def watch_catalog(deps: WithLiveCatalog) -> None:
    """Keep the service's catalog current: every publication of cost-predictor's, from the current
    one on, for as long as the watch lasts."""
    if deps.live_catalog is not None:
        await deps.live_catalog.follow()


WATCH_CATALOG = every(REWATCH_S, watch_catalog, first_after=lambda _: 0)
"""The job of every service that holds a live catalog (``deps.live_catalog``), in its table: the
watch, started at once and again ``REWATCH_S`` after it broke."""


# --- cost-predictor's side: writing the bucket ----------------------------------------------


async def publish_catalog(kv: KeyValue, published: PublishedCatalog, *, same_revision: bool = False) -> bool:
    """Put ``published`` unless the bucket holds a newer revision (compare-and-set on the entry,
    so two replicas cannot put an older catalog over a newer one). At the same revision it is put
    only with ``same_revision`` (a replica starting with another seed file) and when it says
    something else. True when it was put."""
    value = published.model_dump_json().encode()
    for _ in range(5):
        try:
            entry = await kv.get(CATALOG_KEY)
        except KeyNotFoundError:
            try:
                await kv.create(CATALOG_KEY, value)
                return True
            except KeyWrongLastSequenceError:
                continue  # another replica created it first: compare with theirs
        if entry.value:
            try:
                stored: PublishedCatalog | None = PublishedCatalog.model_validate_json(entry.value)
            except ValidationError:
                stored = None  # unreadable: replace it
            if stored is not None:
                if stored.revision > published.revision:
                    return False
                if stored.revision == published.revision and (not same_revision or stored.same_content(published)):
                    return False
        try:
            await kv.update(CATALOG_KEY, value, last=entry.revision)
            return True
        except KeyWrongLastSequenceError:
            continue
    return False
