"""Pure cost rules: token counts with a real BPE, estimates, recommendations, tier comparison.

No I/O here: the app passes in what the database and other services know.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal

from genai_prices import types

from routewise.contracts.cost import (
    BudgetBasis,
    BudgetImpact,
    CompareTiers,
    CostEstimate,
    EstimateCost,
    ModelEstimate,
    Price,
    PriceEntry,
    PriceUsage,
    Recommendation,
    TierComparison,
    TierSummary,
)
from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import Tier
from routewise.contracts.vocabulary import ErrorCode
from routewise.runtime.tokens import encoding_for_model, token_counts
from routewise.services.cost_predictor.prediction import predict
from routewise.services.cost_predictor.pricing import Override, PriceBook, PricedModel, output_cost

# Share of the remaining budget one call may take before its impact counts as medium / high.
IMPACT_MEDIUM = Decimal("0.01")
IMPACT_HIGH = Decimal("0.10")


def encoding_for(model: PricedModel) -> tuple[str, bool]:
    """(encoding name, exact?): OpenAI models are counted exactly, others with o200k, approximately."""
    return encoding_for_model(model.provider, model.id)


def price(book: PriceBook, usage: PriceUsage) -> Price:
    """Exact price of a call; a model without a price is an error, never free."""
    model = book.resolve(
        f"{usage.provider}/{usage.model}" if usage.provider and "/" not in usage.model else usage.model
    )
    if usage.provider and usage.provider != model.provider:
        raise RoutewiseError(
            f"model {usage.model!r} is served by {model.provider!r}, not {usage.provider!r}",
            code=ErrorCode.unknown_price,
        )
    input_cost, output_cost = model.cost(
        usage.input_tokens, usage.output_tokens, usage.cached_input_tokens, usage.cache_write_tokens
    )
    return Price(
        model=model.id,
        provider=model.provider,
        source=model.source,
        input_cost_usd=input_cost,
        output_cost_usd=output_cost,
        cost_usd=input_cost + output_cost,
    )


def _total(parts: tuple[Decimal, Decimal]) -> Decimal:
    return parts[0] + parts[1]


def budget_impact(cost: Decimal, budget: BudgetBasis | None) -> BudgetImpact | None:
    if budget is None:
        return None
    if budget.remaining_usd <= 0:
        return "high"
    share = cost / budget.remaining_usd
    if share >= IMPACT_HIGH:
        return "high"
    if share >= IMPACT_MEDIUM:
        return "medium"
    return "low"


@dataclass(frozen=True)
class Estimator:
    book: PriceBook

    def resolve_all(self, refs: list[str]) -> list[PricedModel]:
        """Each reference's model; two references to one model (an alias and its id) are refused."""
        models: list[PricedModel] = []
        seen: dict[str, str] = {}
        for ref in refs:
            model = self.book.resolve(ref)
            if model.id in seen:
                raise RoutewiseError(
                    f"{ref!r} and {seen[model.id]!r} are the same model ({model.id}); ask once",
                    code=ErrorCode.invalid_request,
                )
            seen[model.id] = ref
            models.append(model)
        return models

    def estimate(
        self,
        request: EstimateCost,
        models: list[PricedModel],
        profiles: dict[str, list[float]],
        budget: BudgetBasis | None = None,
    ) -> CostEstimate:
        counts: dict[str, tuple[int, int]] = {}
        estimates = []
        for model in models:
            encoding, exact = encoding_for(model)
            if encoding not in counts:
                counts[encoding] = token_counts(request.prompt, request.messages, encoding)
            input_tokens, cached_prefix = counts[encoding]
            cached_prefix = cached_prefix if request.cached_prefix else 0
            cache_read = min(max(request.cached_input_tokens, cached_prefix), input_tokens)
            cache_write = min(request.cache_write_tokens, input_tokens - cache_read)
            output = predict(
                request.task_type,
                profiles.get(model.id),
                expected=request.expected_output_tokens,
                max_tokens=request.max_output_tokens,
            )
            rates = model.rates(input_tokens, cache_read, cache_write)  # one price calculation for p50 and p90
            p50 = _total(output_cost(*rates, output.p50))
            p90 = _total(output_cost(*rates, output.p90))
            estimates.append(
                ModelEstimate(
                    model=model.id,
                    provider=model.provider,
                    tier=model.tier,
                    price_source=model.source,
                    input_tokens=input_tokens,
                    exact_token_count=exact,
                    encoding=encoding,
                    context_window=model.context_window,
                    fits_context=model.context_window is None or input_tokens <= model.context_window,
                    output_tokens_p50=output.p50,
                    output_tokens_p90=output.p90,
                    output_source=output.source,
                    output_samples=output.samples,
                    cost_usd_p50=p50,
                    cost_usd_p90=p90,
                    budget_impact=budget_impact(p90, budget),
                )
            )
        if not any(e.fits_context for e in estimates):
            largest = max(estimates, key=lambda e: e.context_window or 0)
            raise RoutewiseError(
                f"the prompt has {largest.input_tokens} tokens; the largest context window asked for "
                f"({largest.model}) holds {largest.context_window}",
                code=ErrorCode.context_window_exceeded,
                details={
                    e.model: {"input_tokens": e.input_tokens, "context_window": e.context_window} for e in estimates
                },
            )
        return CostEstimate(
            estimates=estimates,
            recommendation=recommend(estimates, models, request.min_tier, request.min_quality),
            budget_status=budget,
        )


def recommend(
    estimates: list[ModelEstimate], models: list[PricedModel], min_tier: Tier | None, min_quality: float | None
) -> Recommendation | None:
    """The cheapest (p50) model that holds the prompt and meets the minimum tier and quality."""
    by_id = {m.id: m for m in models}
    eligible = []
    for est in estimates:
        model = by_id[est.model]
        if not est.fits_context:
            continue
        if min_tier is not None and (model.tier is None or model.tier.rank < min_tier.rank):
            continue
        if min_quality is not None and (model.catalog is None or model.catalog.quality_prior < min_quality):
            continue
        eligible.append(est)
    if not eligible:
        return None
    best = min(eligible, key=lambda e: (e.cost_usd_p50, e.model))
    needs = []
    if min_tier:
        needs.append(f"tier ≥ {min_tier.value}")
    if min_quality is not None:
        needs.append(f"quality ≥ {min_quality:g}")
    condition = f" meeting {' and '.join(needs)}" if needs else ""
    return Recommendation(
        model=best.model, reason=f"cheapest of {len(eligible)} models{condition} that hold the prompt"
    )


def compare_tiers(book: PriceBook, request: CompareTiers, unpriced: Collection[str] = ()) -> TierComparison:
    """Each tier's catalog models (those with a price) priced for the request's token profile."""
    summaries = []
    for tier in Tier:
        models = [book.resolve(m.id) for m in book.catalog.in_tier(tier) if m.id not in unpriced]
        if not models:
            continue
        costs = [
            _total(m.cost(request.input_tokens, request.output_tokens, request.cached_input_tokens)) for m in models
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
