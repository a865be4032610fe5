"""Pure rules of the selector."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.cost_predictor.domain import Estimator
from services.cost_predictor.pricing import PriceBook
from services.selector.domain import choose, complexity_score, detect_pattern, features, tier_for
from shared.catalog import default_catalog
from shared.events import Tier
from shared.requests import EstimateCost

CATALOG = default_catalog()


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
    estimator = Estimator(PriceBook(CATALOG))
    request = EstimateCost(prompt="Hi there", models=[m.id for m in CATALOG.models])
    est = estimator.estimate(request, estimator.resolve_all(request.models), {})
    estimates = {e.model: e for e in est.estimates}
    choice = choose(CATALOG, Tier.standard, estimates, features("Hi there", 2))
    standard = [m.id for m in CATALOG.in_tier(Tier.standard)]
    assert choice.model.id in standard
    assert all(estimates[choice.model.id].cost_usd_p50 <= estimates[m].cost_usd_p50 for m in standard)
    versatile = {m.id for m in CATALOG.in_tier(Tier.versatile)}
    assert versatile <= set(choice.fallback_chain)
    assert choice.model.id not in choice.fallback_chain
    assert Decimal(0) < choice.estimate.cost_usd_p50
