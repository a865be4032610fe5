"""The model catalog: which models exist, who serves them, their tier and quality prior."""

from __future__ import annotations

import os
import tomllib
from functools import cache
from pathlib import Path

from pydantic import Field, PrivateAttr

from routewise.contracts.events import Contract, Tier

DEFAULT_CATALOG = Path(__file__).parent / "data" / "models.toml"


class CatalogModel(Contract):
    id: str
    provider: str
    tier: Tier
    quality_prior: float = Field(ge=0, le=1)
    context_window: int = Field(gt=0)
    capabilities: list[str] = Field(default_factory=list)
    price_ref: str | None = None

    @property
    def price_id(self) -> str:
        return self.price_ref or self.id


class Catalog(Contract):
    models: list[CatalogModel] = Field(min_length=1)

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


def load_catalog(path: Path | None = None) -> Catalog:
    path = path or Path(os.environ.get("ROUTEWISE_CATALOG_PATH") or DEFAULT_CATALOG)
    with path.open("rb") as fh:
        return Catalog.model_validate(tomllib.load(fh)).check()


@cache
def default_catalog() -> Catalog:
    return load_catalog()
