"""Pure cost rules of cost-predictor's own: tier comparison and the price list. Estimates and
prices are ``routewise.estimates`` (the selector estimates with the same function).

No I/O here: the app passes in what the database and other services know.
"""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal

from genai_prices import types

from routewise.contracts.cost import CompareTiers, PriceEntry, TierComparison, TierSummary
from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import Tier
from routewise.contracts.vocabulary import ErrorCode
from routewise.estimates import total
from routewise.services.cost_predictor.pricing import Override, PriceBook, PricedModel


def compare_tiers(book: PriceBook, request: CompareTiers, unpriced: Collection[str] = ()) -> TierComparison:
    """Each tier's catalog models (those with a price) priced for the request's token profile."""
    summaries = []
    for tier in Tier:
        models = [book.resolve(m.id) for m in book.catalog.in_tier(tier) if m.id not in unpriced]
        if not models:
            continue
        costs = [
            total(m.cost(request.input_tokens, request.output_tokens, request.cached_input_tokens)) for m in models
        ]
        cached = [m.id for m in models if m.supports_cache_read]
        qualities = [m.catalog.quality_prior for m in models if m.catalog]
        summaries.append(
            TierSummary(
                tier=tier,
                models=[m.id for m in models],
                quality_min=min(qualities),
                quality_max=max(qualities),
                cost_min_usd=min(costs),
                cost_max_usd=max(costs),
                cache_support="all" if len(cached) == len(models) else "some" if cached else "none",
                cache_models=cached,
            )
        )
    return TierComparison(
        input_tokens=request.input_tokens,
        output_tokens=request.output_tokens,
        cached_input_tokens=request.cached_input_tokens,
        tiers=summaries,
    )


def _base(value: object) -> tuple[Decimal | None, bool]:
    if value is None:
        return None, False
    if isinstance(value, types.TieredPrices):
        return Decimal(value.base), True
    return Decimal(str(value)), False


def price_entry(model: PricedModel) -> PriceEntry:
    price_now = model.current_price()
    fields = {}
    tiered = False
    for name in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"):
        fields[name], is_tiered = _base(getattr(price_now, name, None))
        tiered = tiered or is_tiered
    return PriceEntry(
        model=model.id,
        provider=model.provider,
        source=model.source,
        tiered=tiered,
        context_window=model.context_window,
        **fields,
    )


def unpriced_models(book: PriceBook) -> dict[str, str]:
    """The catalog models without a price, and why: they are not routable until priced (a model
    without a price is never free)."""
    missing: dict[str, str] = {}
    for model in book.catalog.models:
        try:
            book.resolve(model.id).cost(1000, 1000)
        except RoutewiseError as exc:
            if exc.code == ErrorCode.unknown_price:
                missing[model.id] = (
                    f"no price: genai-prices does not know {model.price_id!r} and this deployment has no price "
                    f"for it; set one with `routewise prices set {model.id} --provider {model.provider} "
                    "--input USD --output USD` (per million tokens)"
                )
            else:
                missing[model.id] = f"no price: {exc.message}"
        except Exception as exc:  # a price genai-prices cannot compute for this model
            missing[model.id] = f"no price: {type(exc).__name__}: {exc}"
    return missing


def override_entry(override: Override) -> PriceEntry:
    return PriceEntry(
        model=override.model,
        provider=override.provider,
        source="override",
        input_mtok=override.input_mtok,
        output_mtok=override.output_mtok,
        cache_read_mtok=override.cache_read_mtok,
        cache_write_mtok=override.cache_write_mtok,
        context_window=override.context_window,
    )
