"""Pure rules of the selector and the cost-predictor."""

from __future__ import annotations

from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price

from services.cost_predictor.domain import Estimator, count_tokens, price
from services.selector.domain import choose, complexity_score, detect_pattern, features, tier_for
from shared.catalog import default_catalog
from shared.errors import RoutewiseError
from shared.events import ChatMessage, Tier
from shared.requests import EstimateCost, PriceUsage

CATALOG = default_catalog()


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o", "openai"),
        ("claude-sonnet-4-5", "anthropic"),
        ("gemini-2.5-flash", "google"),
        ("gpt-5-nano", "openai"),
    ],
)
def test_prices_match_genai_prices_exactly(model: str, provider: str) -> None:
    got = price(CATALOG, PriceUsage(model=model, input_tokens=12_345, output_tokens=678, cached_input_tokens=2_000))
    want = calc_price(
        Usage(input_tokens=12_345, output_tokens=678, cache_read_tokens=2_000), model_ref=model, provider_id=provider
    ).total_price
    assert got.cost_usd == want
    assert got.cost_usd > 0


def test_cached_input_is_cheaper_than_fresh_input() -> None:
    fresh = price(CATALOG, PriceUsage(model="gpt-4o", input_tokens=10_000, output_tokens=0))
    cached = price(
        CATALOG, PriceUsage(model="gpt-4o", input_tokens=10_000, output_tokens=0, cached_input_tokens=10_000)
    )
    assert cached.cost_usd == fresh.cost_usd / 2  # gpt-4o: $1.25 vs $2.50 per million


def test_an_unknown_model_is_an_error_with_close_matches_never_free() -> None:
    with pytest.raises(RoutewiseError) as err:
        price(CATALOG, PriceUsage(model="gpt-4-o", input_tokens=1, output_tokens=1))
    assert err.value.code == "unknown_model"
    assert "gpt-4o" in err.value.details["close_matches"]


def test_token_counts_come_from_a_real_bpe() -> None:
    assert count_tokens("Hello world, how are you today?", None, "o200k_base") == 8
    chat = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi")]
    # per message: 3 + role + content; plus 3 to prime the reply
    assert count_tokens(None, chat, "o200k_base") == 3 + (3 + 1 + 3) + (3 + 1 + 1)


def test_estimates_say_when_a_count_is_approximate_and_when_a_prompt_does_not_fit() -> None:
    est = Estimator(CATALOG).estimate(
        EstimateCost(prompt="hello " * 70_000, models=["gpt-4.1", "claude-opus-4-1", "deepseek-chat"])
    )
    by_model = {e.model: e for e in est.estimates}
    assert by_model["gpt-4.1"].exact_token_count is True
    assert by_model["claude-opus-4-1"].exact_token_count is False
    assert by_model["deepseek-chat"].fits_context is False
    assert by_model["gpt-4.1"].fits_context is True


def test_a_prompt_that_fits_no_requested_model_is_an_error_naming_the_window() -> None:
    with pytest.raises(RoutewiseError, match="holds 64000") as err:
        Estimator(CATALOG).estimate(EstimateCost(prompt="hello " * 70_000, models=["deepseek-chat"]))
    assert err.value.code == "context_window_exceeded"


@pytest.mark.parametrize(
    ("prompt", "pattern"),
    [
        ("def add(a, b):\n    return a + b\nwhy does this fail?", "code"),
        ("Solve for x: 3x + 5 = 20", "math"),
        ("Our kubernetes deploy is failing, check the logs", "ops"),
        ("Write a poem about autumn", "creative"),
        ("Compare Postgres and MySQL", "analysis"),
        ("What is the capital of France?", "factual"),
    ],
)
def test_patterns(prompt: str, pattern: str) -> None:
    assert detect_pattern(prompt) == pattern


def test_complexity_grows_with_length_and_reasoning() -> None:
    simple = complexity_score("What time is it?", 5)
    moderate = complexity_score("Compare two approaches to caching and evaluate the trade-offs.", 15)
    hard = complexity_score("Design and analyze a distributed system; prove it step by step. " * 20, 1500)
    assert 0 <= simple < moderate < hard <= 1
    assert tier_for(simple) is Tier.micro
    assert tier_for(hard).rank >= Tier.heavy.rank


def test_choice_is_the_cheapest_of_the_tier_with_the_next_tier_as_fallback() -> None:
    est = Estimator(CATALOG).estimate(EstimateCost(prompt="Hi there", models=[m.id for m in CATALOG.models]))
    estimates = {e.model: e for e in est.estimates}
    choice = choose(CATALOG, Tier.standard, estimates, features("Hi there", 2))
    standard = [m.id for m in CATALOG.in_tier(Tier.standard)]
    assert choice.model.id in standard
    assert all(estimates[choice.model.id].cost_usd <= estimates[m].cost_usd for m in standard)
    versatile = {m.id for m in CATALOG.in_tier(Tier.versatile)}
    assert versatile <= set(choice.fallback_chain)
    assert choice.model.id not in choice.fallback_chain
    assert Decimal(0) < choice.estimate.cost_usd
