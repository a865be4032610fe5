"""The model catalog: which models exist, who serves them, their tier and quality prior.

The file (``data/models.toml``, or ``ROUTEWISE_CATALOG_PATH``) holds the models Routewise ships
with: the *seed*. Models registered at run time (``routewise models register``, answered by
cost-predictor, which keeps them) add to it, and replace a shipped model of the same id.
cost-predictor publishes the resulting catalog (``PublishedCatalog``) to a JetStream KV bucket
that every service using the catalog watches (``routewise.runtime.catalog``).
"""

from __future__ import annotations

import os
import tomllib
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, model_validator

from routewise.contracts.cost import PriceEntry
from routewise.contracts.events import Contract, Tier, UtcDatetime, utcnow
from routewise.contracts.fields import Actor, ModelRef, PerMillion, ProviderId

DEFAULT_CATALOG = Path(__file__).parent / "data" / "models.toml"

CatalogId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")]
"""A catalog model's id: no ``/`` (``provider/model`` names a model outside the catalog), no spaces."""
Capability = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
MAX_CONTEXT_WINDOW = 100_000_000
MAX_REGISTERED = 1_000
"""The most models a deployment may register: the published catalog stays one KV value well under
NATS's 1 MB payload (about 390 KB with 1,000 registered models, each with its price)."""


class CatalogModel(Contract):
    id: CatalogId
    provider: ProviderId
    tier: Tier
    quality_prior: float = Field(ge=0, le=1)
    context_window: int = Field(gt=0, le=MAX_CONTEXT_WINDOW)
    capabilities: list[Capability] = Field(default_factory=list, max_length=32)
    price_ref: ModelRef | None = None
    """The id genai-prices knows the model by, when it differs from ``id``."""

    @property
    def price_id(self) -> str:
        return self.price_ref or self.id


class Catalog(Contract):
    models: list[CatalogModel] = Field(min_length=1, max_length=MAX_REGISTERED + 500)

    _by_id: dict[str, CatalogModel] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: object, /) -> None:
        self._by_id = {m.id: m for m in self.models}

    def get(self, model_id: str) -> CatalogModel | None:
        return self._by_id.get(model_id)

    def require(self, model_id: str) -> CatalogModel:
        model = self.get(model_id)
        if model is None:
            known = ", ".join(m.id for m in self.models)
            raise KeyError(f"model {model_id!r} is not in the catalog (known: {known})")
        return model

    def in_tier(self, tier: Tier) -> list[CatalogModel]:
        return [m for m in self.models if m.tier is tier]

    def check(self) -> Catalog:
        ids = [m.id for m in self.models]
        duplicates = {i for i in ids if ids.count(i) > 1}
        if duplicates:
            raise ValueError(f"catalog lists models twice: {sorted(duplicates)}")
        return self

    def with_registered(self, registered: list[CatalogModel]) -> Catalog:
        """This catalog (the seed) with the registered models added; a registered model replaces
        the shipped model of the same id, in its place."""
        extra = {m.id: m for m in registered}
        merged = [extra.pop(m.id, m) for m in self.models]
        return Catalog(models=[*merged, *extra.values()])


def load_catalog(path: Path | None = None) -> Catalog:
    path = path or Path(os.environ.get("ROUTEWISE_CATALOG_PATH") or DEFAULT_CATALOG)
    with path.open("rb") as fh:
        return Catalog.model_validate(tomllib.load(fh)).check()


@cache
def default_catalog() -> Catalog:
    """The seed: the shipped catalog file (or ``ROUTEWISE_CATALOG_PATH``'s). A service routes
    with the live catalog (``routewise.runtime.catalog``), which starts from it."""
    return load_catalog()


# --- models registered at run time (cost-predictor's requests) -----------------------------

ModelSource = Literal["shipped", "registered"]


class RegisterModel(Contract):
    """Add a model to the catalog, or replace a registered (or shipped) one of the same id: it
    is routable on every replica of every service at once. Its price (USD per million tokens) is
    required when genai-prices does not know the model; given, it is stored as the deployment's
    price override for (provider, id), which wins over genai-prices."""

    id: CatalogId
    provider: ProviderId
    tier: Tier
    quality_prior: float = Field(ge=0, le=1, description="expected answer quality 0..1 before any outcome")
    context_window: int = Field(gt=0, le=MAX_CONTEXT_WINDOW)
    capabilities: list[Capability] = Field(default_factory=list, max_length=32)
    price_ref: ModelRef | None = Field(default=None, description="the id genai-prices knows the model by")
    input_mtok: PerMillion | None = None
    output_mtok: PerMillion | None = None
    cache_read_mtok: PerMillion | None = None
    cache_write_mtok: PerMillion | None = None
    actor: Actor

    @model_validator(mode="after")
    def _whole_price(self) -> RegisterModel:
        if (self.input_mtok is None) != (self.output_mtok is None):
            raise ValueError("give both input_mtok and output_mtok, or neither")
        if self.input_mtok is None and (self.cache_read_mtok is not None or self.cache_write_mtok is not None):
            raise ValueError("a cache price needs the input and output prices too")
        return self

    @property
    def priced(self) -> bool:
        return self.input_mtok is not None

    def entry(self) -> CatalogModel:
        return CatalogModel(
            id=self.id,
            provider=self.provider,
            tier=self.tier,
            quality_prior=self.quality_prior,
            context_window=self.context_window,
            capabilities=self.capabilities,
            price_ref=self.price_ref,
        )


class RemoveModel(Contract):
    """Remove a registered model: a shipped model of the same id comes back; otherwise the model
    is no longer routable. Its price override is kept (costs of calls still in flight are priced
    with it): ``routewise prices remove`` removes it."""

    id: CatalogId
    actor: Actor


class ListModels(Contract):
    """Every model of the live catalog, with where it comes from and whether it can be routed."""


class ModelEntry(Contract):
    model: CatalogModel
    source: ModelSource
    replaces_shipped: bool = False
    """A registered model with the id of a shipped one (the registered entry wins)."""
    routable: bool
    """False when the model has no price: the selector skips it until it is priced."""
    reason: str | None = Field(default=None, max_length=2_000)
    """Why it is not routable."""
    price: PriceEntry | None = None
    """The price it is charged at (base prices, USD per million tokens), and its source."""
    registered_by: Actor | None = None
    registered_at: datetime | None = None


class ModelList(Contract):
    revision: int = Field(ge=0)
    """The catalog's revision (it grows with each registration, removal and price change)."""
    models: list[ModelEntry] = Field(max_length=MAX_REGISTERED + 500)


# --- the published catalog (cost-predictor writes it, every catalog user watches it) -------


class PublishedCatalog(Contract):
    """The live catalog, as one value of the ``<NS>_MODEL_CATALOG`` KV bucket (key ``catalog``):
    the seed with the registered models, which of them have no price (not routable, and why), and
    the deployment's price overrides, so a service's catalog and price book change together."""

    revision: int = Field(ge=1)
    published_at: UtcDatetime = Field(default_factory=utcnow)
    models: list[CatalogModel] = Field(min_length=1, max_length=MAX_REGISTERED + 500)
    unpriced: dict[CatalogId, Annotated[str, Field(max_length=2_000)]] = Field(
        default_factory=dict, max_length=MAX_REGISTERED + 500
    )
    overrides: list[PriceEntry] = Field(default_factory=list, max_length=10_000)

    def catalog(self) -> Catalog:
        return Catalog(models=self.models).check()

    def same_content(self, other: PublishedCatalog) -> bool:
        """Whether two publications say the same (their times aside)."""
        return self.model_dump(exclude={"published_at"}) == other.model_dump(exclude={"published_at"})
