"""How a decision's cost is estimated: token counts with a real BPE, the output tokens learnt per
model and task type, and the price book. One function for both sides: cost-predictor answers
``cost.estimate`` with it, and the selector estimates each decision with it locally, from the
live catalog's price book and the output profiles cost-predictor publishes (no request per
decision). Pure: whoever calls passes in the prices and the profiles.

Output-token prediction learns in constant memory: each (task_type, model) keeps a histogram of
observed output tokens (``routewise.runtime.histogram``), decayed by ``DECAY`` on every new
observation so recent behaviour weighs most. p50/p90 come from the histogram, blended with the
task type's prior until enough samples arrive, and capped by the policy's max_tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from routewise.contracts.cost import (
    BudgetBasis,
    BudgetImpact,
    CostEstimate,
    EstimateCost,
    ModelEstimate,
    Price,
    PriceUsage,
    Recommendation,
)
from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import Tier
from routewise.contracts.vocabulary import ErrorCode
from routewise.pricing import PriceBook, PricedModel, output_cost
from routewise.runtime import histogram
from routewise.runtime.tokens import encoding_for_model, token_counts

DECAY = 0.995  # effective memory ≈ 200 observations
PRIOR_WEIGHT = 8.0  # the prior counts as this many observations
P90_OVER_P50_PRIOR = 2.5

# Output tokens expected per task type before any outcome was observed.
OUTPUT_PRIOR: dict[str, int] = {
    "normal": 400,
    "simple_query": 150,
    "code": 800,
    "fix_bug": 800,
    "investigate_error": 700,
    "analyze_logs": 600,
    "deep_research": 1500,
}
DEFAULT_OUTPUT_PRIOR = 400


def observe(counts: list[float], tokens: int) -> list[float]:
    """The histogram after one more observation, older ones decayed."""
    return histogram.observe(counts, tokens, decay=DECAY)


@dataclass(frozen=True)
class OutputPrediction:
    p50: int
    p90: int
    source: Literal["given", "prior", "learned"]
    samples: float  # effective (decayed) observations behind the learned part


def predict(
    task_type: str,
    counts: list[float] | None,
    *,
    expected: int | None = None,
    max_tokens: int | None = None,
) -> OutputPrediction:
    if expected is not None:
        return OutputPrediction(expected, expected, "given", 0.0)
    prior50 = float(OUTPUT_PRIOR.get(task_type, DEFAULT_OUTPUT_PRIOR))
    prior90 = prior50 * P90_OVER_P50_PRIOR
    samples = sum(counts) if counts else 0.0
    learned50 = histogram.quantile(counts, 0.5) if counts else None
    learned90 = histogram.quantile(counts, 0.9) if counts else None
    source: Literal["prior", "learned"]
    if learned50 is None or learned90 is None:
        p50, p90, source = prior50, prior90, "prior"
    else:
        weight = samples / (samples + PRIOR_WEIGHT)  # log-space blend: the prior fades as data arrives
        p50 = math.exp(weight * math.log(learned50) + (1 - weight) * math.log(prior50))
        p90 = math.exp(weight * math.log(learned90) + (1 - weight) * math.log(prior90))
        source = "learned"
    if max_tokens is not None:
        p50, p90 = min(p50, max_tokens), min(p90, max_tokens)
    p50_int = max(1, round(p50))
    return OutputPrediction(p50_int, max(p50_int, round(p90)), source, round(samples, 2))


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


def total(parts: tuple[Decimal, Decimal]) -> Decimal:
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
            p50 = total(output_cost(*rates, output.p50))
            p90 = total(output_cost(*rates, output.p90))
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
