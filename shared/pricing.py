"""Prices: deployment overrides first, then genai-prices, and never $0 by accident (shared by
cost-predictor, which keeps the overrides, and the gateway, which prices the calls it carries).

A model reference is ``model`` or ``provider/model``. It resolves, in order, to a price
override stored by this deployment, a catalog model, or a model genai-prices knows (which
understands the providers' aliases and dated ids, e.g. ``gpt-4o-2024-08-06``). A reference
that matches nothing, or models of several providers, is an error naming the candidates.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from decimal import ROUND_UP, Decimal
from functools import cached_property
from typing import Any, Literal

from genai_prices import Usage, types
from genai_prices.data_snapshot import get_snapshot

from routewise.contracts.catalog import Catalog, CatalogModel
from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import Tier
from routewise.contracts.vocabulary import ErrorCode

PriceSource = Literal["override", "genai-prices"]


@dataclass(frozen=True)
class Override:
    """A deployment's own price for a (provider, model), in USD per million tokens."""

    provider: str
    model: str
    input_mtok: Decimal
    output_mtok: Decimal
    cache_read_mtok: Decimal | None = None
    cache_write_mtok: Decimal | None = None
    context_window: int | None = None

    def model_price(self) -> types.ModelPrice:
        return types.ModelPrice(
            input_mtok=self.input_mtok,
            output_mtok=self.output_mtok,
            cache_read_mtok=self.cache_read_mtok,
            cache_write_mtok=self.cache_write_mtok,
        )


@dataclass(frozen=True)
class PricedModel:
    id: str
    provider: str
    source: PriceSource
    context_window: int | None
    catalog: CatalogModel | None
    _price: types.ModelPrice | None = None  # overrides
    _genai: tuple[types.Provider, types.ModelInfo] | None = None

    @property
    def tier(self) -> Tier | None:
        return self.catalog.tier if self.catalog else None

    @property
    def supports_cache_read(self) -> bool:
        return self.current_price().cache_read_mtok is not None

    def current_price(self) -> types.ModelPrice:
        if self._price is not None:
            return self._price
        assert self._genai is not None
        return self._genai[1].get_prices(_now())

    def rates(self, input_tokens: int, cache_read: int = 0, cache_write: int = 0) -> tuple[Decimal, Decimal]:
        """(input cost in USD, output price in USD per million tokens) for a call of this input.

        genai-prices picks long-context tiers by input tokens alone, so for a given input the
        output cost is linear in output tokens: one price calculation serves every output size.
        Cached tokens are part of ``input_tokens``.
        """
        if cache_read + cache_write > input_tokens:
            raise RoutewiseError("cached tokens cannot exceed input tokens", code=ErrorCode.invalid_request)
        price = self.current_price()
        if cache_read and price.cache_read_mtok is None:
            cache_read = 0  # no cache price for this model: cached tokens cost as fresh input
        if cache_write and price.cache_write_mtok is None:
            cache_write = 0
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=MILLION,
            cache_read_tokens=cache_read or None,
            cache_write_tokens=cache_write or None,
        )
        if self._genai is not None:
            provider, info = self._genai
            calc: Any = info.calc_price(usage, provider)
            return Decimal(calc.input_price), Decimal(calc.output_price)
        result = price.calc_price(usage)
        return Decimal(result["input_price"]), Decimal(result["output_price"])

    def cost(
        self, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0
    ) -> tuple[Decimal, Decimal]:
        """(input cost, output cost) in USD, to 12 decimal places."""
        return output_cost(*self.rates(input_tokens, cache_read, cache_write), output_tokens)


MILLION = 1_000_000


def output_cost(input_cost: Decimal, output_per_million: Decimal, output_tokens: int) -> tuple[Decimal, Decimal]:
    """(input cost, output cost) in USD, to 12 decimal places, from ``PricedModel.rates``."""
    return _usd(input_cost), _usd(output_per_million * output_tokens / MILLION)


USD_QUANTUM = Decimal("1e-12")
"""Amounts are kept to 12 decimal places (NUMERIC(20, 12)); genai-prices can carry float noise
such as 0.18000000000000002 per MTok, so round — up, so that a cost is never rounded to nothing."""


def _usd(amount: Any) -> Decimal:
    return Decimal(amount).quantize(USD_QUANTUM, rounding=ROUND_UP)


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


class PriceBook:
    """Resolves model references to prices. Cheap to rebuild when overrides change."""

    def __init__(self, catalog: Catalog, overrides: list[Override] | None = None):
        self.catalog = catalog
        self.overrides = {(o.provider, o.model): o for o in overrides or []}
        self._snapshot = get_snapshot()
        self._cache: dict[str, PricedModel] = {}

    @cached_property
    def _providers(self) -> dict[str, types.Provider]:
        return {p.id: p for p in self._snapshot.providers}

    @cached_property
    def _known_ids(self) -> list[str]:
        ids = {m.id for m in self.catalog.models} | {m for (_, m) in self.overrides}
        for provider in self._snapshot.providers:
            ids.update(f"{provider.id}/{m.id}" for m in provider.models)
        return sorted(ids)

    def resolve(self, ref: str) -> PricedModel:
        if ref not in self._cache:
            self._cache[ref] = self._resolve(ref)
        return self._cache[ref]

    def _split(self, ref: str) -> tuple[str | None, str]:
        head, sep, tail = ref.partition("/")
        known = set(self._providers) | {p for (p, _) in self.overrides}
        if sep and head.lower() in known:
            return head.lower(), tail
        return None, ref

    def _resolve(self, ref: str) -> PricedModel:
        ref = ref.strip()
        if not ref:
            raise RoutewiseError("a model id is empty", code=ErrorCode.invalid_request)
        provider_id, model_ref = self._split(ref)
        override = self._override(provider_id, model_ref)
        if override is not None:
            return PricedModel(
                id=override.model,
                provider=override.provider,
                source="override",
                context_window=override.context_window or self._catalog_window(override.model),
                catalog=self.catalog.get(override.model),
                _price=override.model_price(),
            )
        catalog_model = self.catalog.get(model_ref)
        if catalog_model is not None and provider_id in (None, catalog_model.provider):
            return self._catalog_priced(
                catalog_model, *self._genai(catalog_model.price_id, catalog_model.provider, ref)
            )
        provider, info = self._genai(model_ref, provider_id, ref)
        catalog_model = self.catalog.get(info.id)
        if catalog_model is not None and catalog_model.provider == provider.id:
            return self._catalog_priced(catalog_model, provider, info)  # an alias of a catalog model
        return PricedModel(
            id=f"{provider.id}/{info.id}",  # outside the catalog, ids always name their provider
            provider=provider.id,
            source="genai-prices",
            context_window=info.context_window,
            catalog=None,
            _genai=(provider, info),
        )

    @staticmethod
    def _catalog_priced(model: CatalogModel, provider: types.Provider, info: types.ModelInfo) -> PricedModel:
        return PricedModel(
            id=model.id,
            provider=model.provider,
            source="genai-prices",
            context_window=model.context_window,
            catalog=model,
            _genai=(provider, info),
        )

    def _override(self, provider_id: str | None, model: str) -> Override | None:
        if provider_id is not None:
            return self.overrides.get((provider_id, model))
        matches = [o for (p, m), o in self.overrides.items() if m == model]
        if len(matches) > 1:
            options = sorted(f"{o.provider}/{o.model}" for o in matches)
            raise RoutewiseError(
                f"model {model!r} has price overrides from several providers; say which: {', '.join(options)}",
                code=ErrorCode.ambiguous_model,
                details={"candidates": options},
            )
        return matches[0] if matches else None

    def _catalog_window(self, model: str) -> int | None:
        found = self.catalog.get(model)
        return found.context_window if found else None

    def _genai(self, model_ref: str, provider_id: str | None, original: str) -> tuple[types.Provider, types.ModelInfo]:
        if provider_id is not None:
            provider = self._providers.get(provider_id)
            if provider is None:
                raise self._unknown(original)
            info = provider.find_model(model_ref.lower(), all_providers=self._snapshot.providers)
            if info is None:
                raise self._unknown(original)
            return provider, info
        try:
            return self._snapshot.find_provider_model(model_ref, None, None, None)
        except LookupError:
            pass
        # no provider claims this id pattern: look for it in every provider
        found = []
        for provider in self._snapshot.providers:
            info = provider.find_model(model_ref.lower(), all_providers=self._snapshot.providers)
            if info is not None:
                found.append((provider, info))
        if len(found) == 1:
            return found[0]
        if found:
            options = sorted(f"{p.id}/{i.id}" for p, i in found)
            raise RoutewiseError(
                f"model {original!r} is served by several providers; say which, e.g. {options[0]!r}",
                code=ErrorCode.ambiguous_model,
                details={"candidates": options},
            )
        raise self._unknown(original)

    def _unknown(self, ref: str) -> RoutewiseError:
        pool = self._known_ids
        close = difflib.get_close_matches(ref, pool, n=5, cutoff=0.6)
        if not close:  # try the bare model names too
            bare = {i.partition("/")[2] or i: i for i in pool}
            close = [bare[c] for c in difflib.get_close_matches(ref, list(bare), n=5, cutoff=0.6)]
        hint = f"; close matches: {', '.join(close)}" if close else ""
        return RoutewiseError(
            f"no price is known for model {ref!r}{hint}. Add one with `routewise prices set`.",
            code=ErrorCode.unknown_price,
            details={"model": ref, "close_matches": close},
        )
