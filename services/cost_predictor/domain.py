"""Pure cost rules: token counting with a real BPE, prices from genai-prices, estimates."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache

import bpe_openai
from genai_prices import Usage, calc_price

from shared.catalog import Catalog, CatalogModel
from shared.errors import RoutewiseError
from shared.events import ChatMessage
from shared.requests import CostEstimate, EstimateCost, ModelEstimate, Price, PriceUsage

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

# OpenAI's chat format adds a few tokens per message and primes the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMING = 3


@cache
def _encoding(name: str) -> bpe_openai.Encoding:
    return bpe_openai.get_encoding(name)


def encoding_for(model: CatalogModel) -> tuple[str, bool]:
    """(encoding name, exact?) — OpenAI models are counted exactly, others approximately."""
    if model.provider == "openai":
        legacy = model.id.startswith(("gpt-4-", "gpt-3.5")) or model.id == "gpt-4"
        return ("cl100k_base" if legacy else "o200k_base"), True
    return "o200k_base", False


def count_tokens(text: str | None, messages: list[ChatMessage] | None, encoding: str) -> int:
    enc = _encoding(encoding)
    if messages is None:
        return len(enc.encode(text or ""))
    total = TOKENS_REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE + len(enc.encode(message.role)) + len(enc.encode(message.content))
    return total


def _lookup(catalog: Catalog, model_id: str) -> CatalogModel:
    model = catalog.get(model_id)
    if model is None:
        close = difflib.get_close_matches(model_id, [m.id for m in catalog.models], n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise RoutewiseError(
            f"unknown model {model_id!r}{hint}",
            code="unknown_model",
            details={"model": model_id, "close_matches": close},
        )
    return model


def price(catalog: Catalog, usage: PriceUsage) -> Price:
    """Exact price of a call; a model without a price is an error, never free."""
    model = _lookup(catalog, usage.model)
    if usage.provider and usage.provider != model.provider:
        raise RoutewiseError(
            f"model {model.id!r} is served by {model.provider!r}, not {usage.provider!r}",
            code="unknown_model",
        )
    if usage.cached_input_tokens > usage.input_tokens:
        raise RoutewiseError("cached_input_tokens cannot exceed input_tokens", code="invalid_request")
    try:
        calc = calc_price(
            Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cached_input_tokens or None,
            ),
            model_ref=model.price_id,
            provider_id=model.provider,
        )
    except LookupError as exc:
        raise RoutewiseError(
            f"no price is known for {model.provider}/{model.id}: {exc}",
            code="unknown_price",
            details={"model": model.id, "provider": model.provider},
        ) from exc
    return Price(
        model=model.id,
        provider=model.provider,
        input_cost_usd=calc.input_price,
        output_cost_usd=calc.output_price,
        cost_usd=calc.total_price,
    )


@dataclass(frozen=True)
class Estimator:
    catalog: Catalog

    def estimate(self, request: EstimateCost) -> CostEstimate:
        output_tokens = request.expected_output_tokens
        if output_tokens is None:
            output_tokens = OUTPUT_PRIOR.get(request.task_type, DEFAULT_OUTPUT_PRIOR)
        counts: dict[str, int] = {}
        estimates = []
        for model_id in request.models:
            model = _lookup(self.catalog, model_id)
            encoding, exact = encoding_for(model)
            if encoding not in counts:
                counts[encoding] = count_tokens(request.prompt, request.messages, encoding)
            input_tokens = counts[encoding]
            cached = min(request.cached_input_tokens, input_tokens)
            cost = price(
                self.catalog,
                PriceUsage(
                    model=model.id, input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached
                ),
            ).cost_usd
            estimates.append(
                ModelEstimate(
                    model=model.id,
                    provider=model.provider,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cost_usd=cost,
                    exact_token_count=exact,
                    encoding=encoding,
                    context_window=model.context_window,
                    fits_context=input_tokens <= model.context_window,
                )
            )
        if not any(e.fits_context for e in estimates):
            largest = max(estimates, key=lambda e: e.context_window)
            raise RoutewiseError(
                f"the prompt has {largest.input_tokens} tokens; the largest context window asked for "
                f"({largest.model}) holds {largest.context_window}",
                code="context_window_exceeded",
                details={
                    e.model: {"input_tokens": e.input_tokens, "context_window": e.context_window} for e in estimates
                },
            )
        return CostEstimate(estimates=estimates)


def check_catalog_priced(catalog: Catalog) -> None:
    """Every catalog model must have a price: refuse to start otherwise."""
    missing = []
    for model in catalog.models:
        try:
            price(catalog, PriceUsage(model=model.id, input_tokens=1000, output_tokens=1000))
        except RoutewiseError as exc:
            missing.append(exc.message)
    if missing:
        raise SystemExit("catalog models without a price: " + "; ".join(missing))
