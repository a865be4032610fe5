"""The live catalog's rules: registered models over the shipped seed, what a registration must
carry, which publication a service takes, and models without a price kept out of routing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from routewise.contracts.catalog import CatalogModel, PublishedCatalog, RegisterModel, default_catalog
from routewise.contracts.cost import CompareTiers, PriceEntry
from routewise.contracts.events import Constraints, Tier
from routewise.contracts.routing import TierPreferences
from routewise.pricing import PriceBook
from routewise.runtime.catalog import CatalogView, LiveCatalog
from routewise.runtime.service import Runtime
from routewise.runtime.settings import Settings
from routewise.services.cost_predictor.domain import compare_tiers, unpriced_models
from routewise.services.gateway import handlers as gateway
from routewise.services.gateway.app import SERVICE as GATEWAY
from routewise.services.selector.domain import Limits, Policy, screen

SEED = default_catalog()
ACME = CatalogModel(id="acme-small-1", provider="mock", tier=Tier.micro, quality_prior=0.9, context_window=32_000)
ACME_PRICE = PriceEntry(
    model="acme-small-1",
    provider="mock",
    source="override",
    input_mtok=Decimal("0.01"),
    output_mtok=Decimal("0.02"),
    cache_read_mtok=None,
    cache_write_mtok=None,
    context_window=None,
)


def published(revision: int, *extra: CatalogModel, prices: list[PriceEntry] | None = None) -> PublishedCatalog:
    catalog = SEED.with_registered(list(extra))
    return PublishedCatalog(revision=revision, models=catalog.models, overrides=prices or [])


def test_a_registered_model_is_added_and_one_with_a_shipped_id_replaces_it_in_its_place() -> None:
    better = SEED.require("gpt-4o").model_copy(update={"quality_prior": 0.99, "provider": "azure"})
    merged = SEED.with_registered([ACME, better])
    ids = [m.id for m in merged.models]
    assert ids == [*(m.id for m in SEED.models), "acme-small-1"]
    assert merged.require("gpt-4o").provider == "azure"
    assert merged.require("gpt-4o").quality_prior == 0.99
    assert SEED.require("gpt-4o").provider == "openai"  # the seed itself is untouched


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"input_mtok": "0.1"}, "give both input_mtok and output_mtok"),
        ({"cache_read_mtok": "0.1"}, "a cache price needs the input and output prices"),
        ({"id": "mock/acme"}, "id"),
        ({"id": "acme small"}, "id"),
        ({"provider": "Acme GPU"}, "provider"),
        ({"quality_prior": 1.5}, "quality_prior"),
        ({"context_window": 0}, "context_window"),
        ({"input_mtok": "-1", "output_mtok": "1"}, "input_mtok"),
        ({"capabilities": ["x" * 65]}, "capabilities"),
    ],
)
def test_a_registration_is_refused_when_it_is_incomplete_or_unbounded(fields: dict[str, object], problem: str) -> None:
    base: dict[str, object] = {
        "id": "acme-small-1",
        "provider": "mock",
        "tier": "micro",
        "quality_prior": 0.9,
        "context_window": 32_000,
        "actor": "ops@acme",
    }
    with pytest.raises(ValidationError, match=problem):
        RegisterModel.model_validate(base | fields)


def test_a_published_price_prices_the_registered_model_in_every_service_s_book() -> None:
    view = CatalogView.of(published(2, ACME, prices=[ACME_PRICE]))
    priced = view.price_book().resolve("acme-small-1")
    assert priced.source == "override"
    assert priced.tier is Tier.micro
    assert _sum(priced.cost(1_000_000, 1_000_000)) == Decimal("0.03")


def _sum(parts: tuple[Decimal, Decimal]) -> Decimal:
    return parts[0] + parts[1]


class Feed:
    def __init__(self, *values: bytes | None) -> None:
        self.values = list(values)

    async def current(self) -> bytes | None:
        return self.values[0] if self.values else None

    async def watch(self) -> AsyncIterator[bytes | None]:
        for value in self.values:
            yield value


async def test_a_service_takes_each_newer_publication_and_ignores_older_or_unreadable_ones() -> None:
    seen: list[int] = []
    live = LiveCatalog(
        Feed(
            published(3).model_dump_json().encode(),
            published(5, ACME, prices=[ACME_PRICE]).model_dump_json().encode(),
            published(4).model_dump_json().encode(),  # an older replica's, late: ignored
            b'{"revision": 6, "models": "garbage"}',  # unreadable: ignored, the last good one stays
            b"",  # deleted: the last one known stays
            published(5, ACME, prices=[ACME_PRICE]).model_dump_json().encode(),  # the same again: no news
        ),
        SEED,
    )
    live.on_change(lambda view: seen.append(view.revision))
    assert live.view.revision == 0  # before anything is published: the seed
    assert live.view.catalog.get("acme-small-1") is None
    await live.follow()
    assert seen == [0, 3, 5]
    assert live.view.catalog.require("acme-small-1").provider == "mock"
    assert live.view.price_book().resolve("acme-small-1").source == "override"


async def test_the_same_revision_with_another_content_is_taken() -> None:
    """A cost-predictor started with another seed file publishes its catalog at the same revision."""
    live = LiveCatalog(Feed(published(3).model_dump_json().encode()), SEED)
    await live.load()
    assert live.put(published(3, ACME, prices=[ACME_PRICE]).model_dump_json().encode())
    assert live.view.catalog.get("acme-small-1") is not None


def test_a_catalog_model_without_a_price_is_named_with_the_command_that_prices_it() -> None:
    book = PriceBook(SEED.with_registered([ACME]))
    missing = unpriced_models(book)
    assert list(missing) == ["acme-small-1"]
    assert "routewise prices set acme-small-1 --provider mock --input USD --output USD" in missing["acme-small-1"]
    # the tiers compare the priced models, instead of failing for the one without a price
    tiers = compare_tiers(book, CompareTiers(), missing)
    micro = next(t for t in tiers.tiers if t.tier is Tier.micro)
    assert "acme-small-1" not in micro.models and micro.models
    priced = PriceBook(SEED.with_registered([ACME]), CatalogView.of(published(2, ACME, prices=[ACME_PRICE])).overrides)
    assert unpriced_models(priced) == {}


def test_the_selector_lists_a_model_without_a_price_as_not_routable_with_why() -> None:
    catalog = SEED.with_registered([ACME])
    limits = Limits(Policy("normal", ("acme-small-1", "gpt-4o")), TierPreferences(workspace_id="a/b"), Constraints())
    screened = screen(catalog, limits, {}, {"gpt-4o": (0.8, 0.0)}, unroutable={"acme-small-1": "no price: set one"})
    assert screened.candidates == []
    assert screened.excluded == {"acme-small-1": "not routable: no price: set one", "gpt-4o": "no cost estimate"}


async def test_a_model_the_watch_has_not_delivered_yet_is_read_from_the_bucket_at_most_once_a_second() -> None:
    feed = Feed(published(3).model_dump_json().encode())
    live = LiveCatalog(feed, SEED)
    await live.load()
    feed.values = [published(4, ACME, prices=[ACME_PRICE]).model_dump_json().encode()]  # registered meanwhile
    assert await live.refresh()
    assert live.view.catalog.get("acme-small-1") is not None
    feed.values = [published(5).model_dump_json().encode()]
    assert not await live.refresh()  # asked again within the second: the bucket is not read
    assert live.view.revision == 4
    assert await live.refresh(min_interval=0)
    assert live.view.revision == 5


class SlowBucket(Feed):
    """A bucket whose reads take until it is told to answer."""

    def __init__(self, *values: bytes | None) -> None:
        super().__init__(*values)
        self.reads = 0
        self.answers = asyncio.Event()

    async def current(self) -> bytes | None:
        self.reads += 1
        await self.answers.wait()
        return await super().current()


async def test_a_refresh_in_the_background_is_used_from_the_next_look_on_and_reads_once_at_a_time() -> None:
    bucket = SlowBucket()
    live = LiveCatalog(bucket, SEED)
    bucket.values = [published(4, ACME, prices=[ACME_PRICE]).model_dump_json().encode()]  # registered meanwhile
    live.refresh_soon()  # returns at once: the caller goes on with the catalog it has
    live.refresh_soon(min_interval=0)  # a read is under way: no second one
    assert live.view.catalog.get("acme-small-1") is None
    await asyncio.sleep(0)
    assert bucket.reads == 1
    bucket.answers.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert live.view.revision == 4 and live.view.catalog.get("acme-small-1") is not None
    live.refresh_soon()  # within the second: the bucket is not read again
    await asyncio.sleep(0)
    assert bucket.reads == 1


async def test_the_gateway_s_price_job_ends_once_a_catalog_is_published() -> None:
    """Before any publication the gateway asks cost-predictor for the overrides every 30 s; once a
    catalog is published its prices come with it, and the job has nothing left to do."""
    [job] = [j for j in GATEWAY.jobs if j.run is gateway.reload_prices]
    runs: list[int] = []

    async def counted(deps: object) -> None:
        runs.append(1)

    runtime = Runtime(GATEWAY, Settings(), None, None, CollectorRegistry(), None)  # type: ignore[arg-type]
    live = LiveCatalog(Feed(), SEED)
    runtime._deps = SimpleNamespace(live_catalog=live)
    running = asyncio.create_task(runtime._run_job(replace(job, run=counted, interval=lambda _: 0.01)))
    await asyncio.sleep(0.1)
    assert runs and not running.done()  # nothing published: the job asks again and again
    live.put(published(3).model_dump_json().encode())
    await asyncio.wait_for(running, 1)  # ended
    asked = len(runs)
    await asyncio.sleep(0.05)
    assert len(runs) == asked
    # published before the service started: the job ends without asking at all
    runs.clear()
    await asyncio.wait_for(runtime._run_job(replace(job, run=counted, interval=lambda _: 0.01)), 1)
    assert runs == []
