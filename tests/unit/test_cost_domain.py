"""Pure rules of the cost-predictor: prices, tokens, predictions, recommendations, tiers."""

from __future__ import annotations

import math
import random
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price

from routewise.contracts.catalog import default_catalog
from routewise.contracts.cost import BudgetBasis, CompareTiers, EstimateCost, PriceUsage
from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import ChatMessage, Tier
from routewise.estimates import Estimator, budget_impact, observe, predict, price
from routewise.runtime.histogram import N_BUCKETS, quantile
from routewise.runtime.tokens import MIN_CACHED_PREFIX, count_tokens, token_counts
from routewise.services.cost_predictor.domain import compare_tiers, price_entry
from routewise.services.cost_predictor.pricing import Override, PriceBook

CATALOG = default_catalog()
BOOK = PriceBook(CATALOG)


def estimate(request: EstimateCost, book: PriceBook = BOOK, profiles: dict[str, list[float]] | None = None):  # type: ignore[no-untyped-def]
    estimator = Estimator(book)
    return estimator.estimate(request, estimator.resolve_all(request.models), profiles or {})


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
    got = price(BOOK, PriceUsage(model=model, input_tokens=12_345, output_tokens=678, cached_input_tokens=2_000))
    want = calc_price(
        Usage(input_tokens=12_345, output_tokens=678, cache_read_tokens=2_000), model_ref=model, provider_id=provider
    ).total_price
    assert got.cost_usd == want
    assert got.cost_usd > 0
    assert got.source == "genai-prices"


def test_cache_reads_and_writes_are_priced() -> None:
    fresh = price(BOOK, PriceUsage(model="claude-sonnet-4-5", input_tokens=10_000, output_tokens=0))
    read = price(
        BOOK, PriceUsage(model="claude-sonnet-4-5", input_tokens=10_000, output_tokens=0, cached_input_tokens=10_000)
    )
    write = price(
        BOOK, PriceUsage(model="claude-sonnet-4-5", input_tokens=10_000, output_tokens=0, cache_write_tokens=10_000)
    )
    assert fresh.cost_usd == Decimal("0.03")  # $3 per million
    assert read.cost_usd == Decimal("0.003")  # $0.30 per million
    assert write.cost_usd == Decimal("0.0375")  # $3.75 per million


def test_long_context_tiers_apply() -> None:
    short = price(BOOK, PriceUsage(model="claude-sonnet-4-5", input_tokens=100_000, output_tokens=0))
    long = price(BOOK, PriceUsage(model="claude-sonnet-4-5", input_tokens=300_000, output_tokens=0))
    assert long.cost_usd / 300_000 > short.cost_usd / 100_000  # past 200k the per-token price doubles


@pytest.mark.parametrize(
    ("ref", "model", "provider"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o", "openai"),  # dated id of a catalog model
        ("openai/gpt-4o", "gpt-4o", "openai"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5", "anthropic"),
        ("gpt-4.1-nano", "openai/gpt-4.1-nano", "openai"),  # outside the catalog: provider/model
        ("together/mistralai/Mixtral-8x7B-Instruct-v0.1", "together/mistralai/Mixtral-8x7B-Instruct-v0.1", "together"),
    ],
)
def test_model_references_resolve_to_one_canonical_id(ref: str, model: str, provider: str) -> None:
    resolved = BOOK.resolve(ref)
    assert (resolved.id, resolved.provider) == (model, provider)


def test_an_unknown_model_is_an_error_with_close_matches_never_free() -> None:
    with pytest.raises(RoutewiseError) as err:
        price(BOOK, PriceUsage(model="gpt-4-o", input_tokens=1, output_tokens=1))
    assert err.value.code == "unknown_price"
    assert "gpt-4o" in err.value.details["close_matches"]
    assert "routewise prices set" in err.value.message


def test_an_override_wins_and_a_private_model_gets_a_price() -> None:
    book = PriceBook(
        CATALOG,
        [
            Override("openai", "gpt-4o", Decimal("1"), Decimal("2")),  # a negotiated discount
            Override("acme", "llama-private", Decimal("0.1"), Decimal("0.2"), context_window=32_000),
        ],
    )
    discounted = price(book, PriceUsage(model="gpt-4o", input_tokens=1_000_000, output_tokens=1_000_000))
    assert (discounted.cost_usd, discounted.source) == (Decimal(3), "override")
    private = book.resolve("llama-private")
    assert (private.provider, private.context_window, private.tier) == ("acme", 32_000, None)


def test_overrides_from_two_providers_for_one_name_are_ambiguous() -> None:
    book = PriceBook(CATALOG, [Override("a", "m", Decimal(1), Decimal(1)), Override("b", "m", Decimal(2), Decimal(2))])
    with pytest.raises(RoutewiseError) as err:
        book.resolve("m")
    assert err.value.code == "ambiguous_model"
    assert book.resolve("b/m").provider == "b"


def test_token_counts_come_from_a_real_bpe() -> None:
    assert count_tokens("Hello world, how are you today?", None, "o200k_base") == 8
    chat = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi")]
    # per message: 3 + role + content; plus 3 to prime the reply
    assert count_tokens(None, chat, "o200k_base") == 3 + (3 + 1 + 3) + (3 + 1 + 1)


def test_cache_aware_estimates_price_earlier_turns_as_cache_reads() -> None:
    chat = [
        ChatMessage(role="system", content="You are a careful support agent. " * 300),
        ChatMessage(role="user", content="My card was declined."),
        ChatMessage(role="assistant", content="Let me check that for you."),
        ChatMessage(role="user", content="What now?"),
    ]
    total, prefix = token_counts(None, chat, "o200k_base")
    assert total == count_tokens(None, chat, "o200k_base")
    assert prefix == count_tokens(None, chat[:3], "o200k_base") - 3  # the three earlier messages, no reply priming
    assert prefix >= MIN_CACHED_PREFIX
    models = ["gpt-4.1", "claude-sonnet-4-5"]
    full = {
        e.model: e for e in estimate(EstimateCost(messages=chat, models=models, expected_output_tokens=50)).estimates
    }
    cached = {
        e.model: e
        for e in estimate(
            EstimateCost(messages=chat, models=models, expected_output_tokens=50, cached_prefix=True)
        ).estimates
    }
    for model in models:
        assert cached[model].input_tokens == full[model].input_tokens
        assert cached[model].cost_usd_p50 < full[model].cost_usd_p50
    gpt = calc_price(
        Usage(input_tokens=full["gpt-4.1"].input_tokens, cache_read_tokens=prefix, output_tokens=50),
        model_ref="gpt-4.1",
        provider_id="openai",
    )
    assert cached["gpt-4.1"].cost_usd_p50 == gpt.total_price
    assert token_counts(None, [ChatMessage(role="user", content="Only turn")], "o200k_base")[1] == 0
    short = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi")]
    assert token_counts(None, short, "o200k_base")[1] == 0  # too short for a provider to cache


def test_estimates_say_when_a_count_is_approximate_and_when_a_prompt_does_not_fit() -> None:
    est = estimate(EstimateCost(prompt="hello " * 70_000, models=["gpt-4.1", "claude-opus-4-1", "deepseek-chat"]))
    by_model = {e.model: e for e in est.estimates}
    assert by_model["gpt-4.1"].exact_token_count is True
    assert by_model["claude-opus-4-1"].exact_token_count is False
    assert by_model["deepseek-chat"].fits_context is False
    assert by_model["gpt-4.1"].fits_context is True
    assert est.recommendation is not None
    assert est.recommendation.model != "deepseek-chat"


def test_a_prompt_that_fits_no_requested_model_is_an_error_naming_the_window() -> None:
    with pytest.raises(RoutewiseError, match="holds 64000") as err:
        estimate(EstimateCost(prompt="hello " * 70_000, models=["deepseek-chat"]))
    assert err.value.code == "context_window_exceeded"


def test_p90_costs_more_than_p50_and_both_use_the_prior_before_any_data() -> None:
    (e,) = estimate(EstimateCost(prompt="Write a function", models=["gpt-4o"], task_type="code")).estimates
    assert (e.output_tokens_p50, e.output_source) == (800, "prior")
    assert e.output_tokens_p90 == 2000
    assert e.cost_usd_p90 > e.cost_usd_p50
    expected = calc_price(
        Usage(input_tokens=e.input_tokens, output_tokens=800), model_ref="gpt-4o", provider_id="openai"
    )
    assert e.cost_usd_p50 == expected.total_price


def test_given_output_tokens_and_the_policy_cap_are_respected() -> None:
    (given,) = estimate(EstimateCost(prompt="x", models=["gpt-4o"], expected_output_tokens=123)).estimates
    assert (given.output_tokens_p50, given.output_tokens_p90, given.output_source) == (123, 123, "given")
    (capped,) = estimate(
        EstimateCost(prompt="x", models=["gpt-4o"], task_type="deep_research", max_output_tokens=900)
    ).estimates
    assert capped.output_tokens_p50 == 900
    assert capped.output_tokens_p90 == 900


def test_the_recommendation_is_the_cheapest_that_meets_tier_and_quality() -> None:
    models = [m.id for m in CATALOG.models]
    cheapest = estimate(EstimateCost(prompt="hi", models=models)).recommendation
    heavy = estimate(EstimateCost(prompt="hi", models=models, min_tier=Tier.heavy)).recommendation
    good = estimate(EstimateCost(prompt="hi", models=models, min_quality=0.85)).recommendation
    assert cheapest is not None and heavy is not None and good is not None
    assert CATALOG.require(cheapest.model).tier is Tier.micro
    assert CATALOG.require(heavy.model).tier.rank >= Tier.heavy.rank
    assert CATALOG.require(good.model).quality_prior >= 0.85
    assert "tier ≥ heavy" in heavy.reason
    assert estimate(EstimateCost(prompt="hi", models=["gpt-5-nano"], min_quality=0.99)).recommendation is None


@pytest.mark.parametrize(
    ("cost", "remaining", "impact"),
    [("0.001", "10", "low"), ("0.2", "10", "medium"), ("1", "10", "high"), ("0.001", "0", "high")],
)
def test_budget_impact_is_relative_to_what_remains(cost: str, remaining: str, impact: str) -> None:
    basis = BudgetBasis(scope_type="org", scope_id="acme", remaining_usd=Decimal(remaining), percent_remaining=50.0)
    assert budget_impact(Decimal(cost), basis) == impact
    assert budget_impact(Decimal(cost), None) is None


def test_tier_comparison_covers_every_tier_with_ordered_ranges() -> None:
    comparison = compare_tiers(BOOK, CompareTiers(input_tokens=2000, output_tokens=500, cached_input_tokens=1000))
    assert [t.tier for t in comparison.tiers] == list(Tier)
    for summary in comparison.tiers:
        assert summary.cost_min_usd <= summary.cost_max_usd
        assert summary.quality_min <= summary.quality_max
        assert set(summary.cache_models) <= set(summary.models)
    complex_tier, micro = comparison.tiers[-1], comparison.tiers[0]
    assert complex_tier.cost_min_usd > micro.cost_max_usd
    assert complex_tier.quality_min > micro.quality_max


def test_price_entries_show_tiered_base_prices() -> None:
    entry = price_entry(BOOK.resolve("claude-sonnet-4-5"))
    assert (entry.input_mtok, entry.output_mtok, entry.cache_read_mtok) == (Decimal(3), Decimal(15), Decimal("0.3"))
    assert entry.tiered is True
    assert price_entry(BOOK.resolve("gpt-4o")).tiered is False


def test_the_predicted_median_converges_on_a_known_distribution() -> None:
    rng = random.Random(7)
    counts: list[float] = []
    for _ in range(400):
        counts = observe(counts, round(rng.lognormvariate(math.log(300), 0.5)))
    prediction = predict("normal", counts)
    assert prediction.source == "learned"
    assert abs(prediction.p50 - 300) / 300 < 0.10
    true_p90 = math.exp(math.log(300) + 1.2816 * 0.5)
    assert abs(prediction.p90 - true_p90) / true_p90 < 0.15
    assert len(counts) == N_BUCKETS  # constant memory, whatever the history


def test_recent_behaviour_outweighs_old() -> None:
    counts: list[float] = []
    for _ in range(300):
        counts = observe(counts, 100)
    for _ in range(300):
        counts = observe(counts, 1000)
    assert predict("normal", counts).p50 > 700


def test_quantile_of_an_empty_histogram_is_unknown() -> None:
    assert quantile([0.0] * N_BUCKETS, 0.5) is None


def test_float_noise_in_genai_prices_is_rounded_up_to_twelve_places() -> None:
    # genai-prices lists this model at 0.18000000000000002 USD per million tokens
    noisy = BOOK.resolve("huggingface_together/Qwen/Qwen3-VL-8B-Instruct")
    input_cost, output_cost = noisy.cost(1234, 567)
    for amount in (input_cost, output_cost):
        assert amount.as_tuple().exponent >= -12
    assert input_cost >= Decimal("0.00022212")  # rounded up, never down to less than was spent
    assert price(BOOK, PriceUsage(model=noisy.id, input_tokens=1234, output_tokens=567)).cost_usd > 0


def test_an_alias_and_its_model_in_one_request_are_refused() -> None:
    with pytest.raises(RoutewiseError, match="same model") as err:
        estimate(EstimateCost(prompt="hi", models=["gpt-4o", "gpt-4o-2024-08-06"]))
    assert err.value.code == "invalid_request"
