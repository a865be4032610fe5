"""Pure rules of the selector."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from routewise.contracts.budget import CostRestrictions
from routewise.contracts.catalog import default_catalog
from routewise.contracts.cost import EstimateCost, ModelEstimate
from routewise.contracts.events import Constraints, Tier
from routewise.contracts.routing import TierPreferences
from routewise.estimates import Estimator
from routewise.services.cost_predictor.pricing import PriceBook
from routewise.services.selector.domain import (
    Candidate,
    Limits,
    Pick,
    Policy,
    by_complexity,
    by_hybrid,
    by_learning,
    cheaper_candidates,
    complexity_score,
    decide,
    detect_pattern,
    fallback_chain,
    features,
    quality_target,
    screen,
    target_tier,
    tier_for,
    validate,
)
from routewise.services.selector.learner import (
    TextModel,
    base_quality,
    confidence,
    learn,
    logit,
    prior_quality,
    sigmoid,
    text_features,
)

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


MODERATE = "Compare two approaches to caching in a web service and evaluate the trade-offs."


def estimates_for(prompt: str) -> dict[str, ModelEstimate]:
    estimator = Estimator(PriceBook(CATALOG))
    request = EstimateCost(prompt=prompt, models=[m.id for m in CATALOG.models])
    return {e.model: e for e in estimator.estimate(request, estimator.resolve_all(request.models), {}).estimates}


def limits(**prefs: object) -> Limits:
    policy = Policy("all", tuple(m.id for m in CATALOG.models))
    return Limits(policy, TierPreferences(workspace_id="acme/ws", **prefs), Constraints())  # type: ignore[arg-type]


def candidates(prompt: str = "Hi there", quality: float = 0.8, **prefs: object) -> list[Candidate]:
    predicted = {m.id: (quality, 0.0) for m in CATALOG.models}
    return screen(CATALOG, limits(**prefs), estimates_for(prompt), predicted).candidates


def test_complexity_picks_the_cheapest_of_the_tier_and_fails_over_upwards() -> None:
    cands = candidates()
    pick = by_complexity(cands, Tier.standard, features("Hi there", 2))
    standard = [c for c in cands if c.model.tier is Tier.standard]
    assert pick.candidate.model.tier is Tier.standard
    assert all(pick.candidate.cost <= c.cost for c in standard)
    chain = fallback_chain(cands, pick.candidate, limits(), enabled=True)
    assert pick.candidate.model.id not in chain and chain
    assert all(CATALOG.require(m).tier.rank >= Tier.standard.rank for m in chain)
    assert fallback_chain(cands, pick.candidate, limits(), enabled=False) == []
    # after a budget refused one and capped tiers, neither is offered to fail over to
    capped = replace(limits(), restrictions=CostRestrictions(max_tier=Tier.versatile))
    after = fallback_chain(cands, pick.candidate, capped, enabled=True, refused=frozenset({chain[0]}))
    assert chain[0] not in after
    assert all(CATALOG.require(m).tier.rank <= Tier.versatile.rank for m in after)
    assert Decimal(0) < pick.candidate.cost


def test_workspace_bounds_and_preferred_providers_narrow_the_candidates() -> None:
    everyone = {m.id: (0.8, 0.0) for m in CATALOG.models}
    bounded = screen(CATALOG, limits(min_tier=Tier.versatile, max_tier=Tier.heavy), estimates_for("Hi"), everyone)
    assert {c.model.tier for c in bounded.candidates} == {Tier.versatile, Tier.heavy}
    assert "below the workspace's min tier" in bounded.excluded["gpt-5-nano"]
    assert "above the workspace's max tier" in bounded.excluded["gpt-5"]
    preferred = screen(CATALOG, limits(preferred_providers=["anthropic"]), estimates_for("Hi"), everyone)
    assert {c.model.provider for c in preferred.candidates} == {"anthropic"}
    assert "prefers anthropic" in preferred.excluded["gpt-4o"]


def test_the_target_tier_follows_complexity_within_the_workspace_bounds() -> None:
    hard = features("Design and analyze a distributed system; prove it step by step. " * 20, 1500)
    assert target_tier(hard, TierPreferences(workspace_id="acme/w")).rank >= Tier.heavy.rank
    assert target_tier(hard, TierPreferences(workspace_id="acme/w", max_tier=Tier.standard)) is Tier.standard
    fixed = TierPreferences(workspace_id="acme/w", auto_escalation=False, default_tier=Tier.micro)
    assert target_tier(hard, fixed) is Tier.micro


def test_learning_takes_the_cheapest_candidate_predicted_at_the_quality_target() -> None:
    cands = candidates()
    by_cost = sorted(cands, key=lambda c: c.cost)
    good = {by_cost[3].model.id, by_cost[6].model.id}
    rated = [replace(c, quality=0.9 if c.model.id in good else 0.6, confidence=0.9) for c in cands]
    pick = by_learning(rated, bias=0.5)  # target 0.85
    assert pick.candidate.model.id == by_cost[3].model.id and pick.strategy == "learning"
    best = by_learning(rated, bias=1.0)  # target 1.0: nobody reaches it, so the best predicted
    assert best.candidate.quality == 0.9 and "no candidate" in best.reasoning
    assert quality_target(0) == 0.7 and quality_target(1) == 1.0


def test_hybrid_validates_confident_learning_and_marks_weak_evidence_experimental() -> None:
    cands = {c.model.id: c for c in candidates()}
    feats = features("Hi", 2)
    complexity = by_complexity(list(cands.values()), Tier.versatile, feats)
    near = Pick(replace(cands["claude-haiku-4-5"], confidence=0.9), "learning", "learnt")  # one tier below
    far = Pick(replace(cands["gpt-5-nano"], confidence=0.9), "learning", "learnt")  # two tiers below
    unsure = Pick(replace(cands["gpt-5-nano"], confidence=0.1), "learning", "learnt")
    assert by_hybrid(near, complexity).candidate.model.id == "claude-haiku-4-5"
    assert not by_hybrid(near, complexity).experimental
    overruled = by_hybrid(far, complexity)
    assert overruled.strategy == "complexity" and overruled.candidate is complexity.candidate
    assert overruled.fallback_reason and "overrules" in overruled.fallback_reason
    trial = by_hybrid(unsure, complexity)
    assert trial.candidate.model.id == "gpt-5-nano" and trial.experimental and trial.strategy == "hybrid"


def test_an_error_of_the_learner_falls_back_to_complexity_with_the_reason() -> None:
    cands = candidates()
    pick = decide("hybrid", cands, Tier.micro, features("Hi", 2), 0.5, "ValueError: snapshot unreadable")
    assert pick.strategy == "complexity" and pick.fallback_reason
    assert "snapshot unreadable" in pick.fallback_reason and "hybrid failed" in pick.reasoning


def test_a_budget_refusal_offers_only_cheaper_candidates_within_the_restrictions() -> None:
    cands = sorted(candidates(), key=lambda c: c.cost)
    top = cands[-1]
    restricted = {cands[0].model.id}
    budget = CostRestrictions(restricted_models=sorted(restricted), max_tier=Tier.heavy)
    found = cheaper_candidates(cands, top, replace(limits(), restrictions=budget))
    holds = [c.estimate.cost_usd_p90 for c in found]
    assert found and all(h < top.estimate.cost_usd_p90 for h in holds)  # a smaller hold than the refused one
    assert not restricted & {c.model.id for c in found}
    assert all(c.model.tier.rank <= Tier.heavy.rank for c in found)
    assert holds == sorted(holds, reverse=True)  # the closest first


def test_validation_catches_a_model_demoted_while_the_task_was_decided() -> None:
    cands = candidates()
    nano = next(c for c in cands if c.model.id == "gpt-5-nano")
    validate(nano, CATALOG, limits())
    with pytest.raises(ValueError, match="demoted"):
        validate(nano, CATALOG, replace(limits(), demoted=frozenset({"gpt-5-nano"})))
    with pytest.raises(ValueError, match="budget"):
        validate(nano, CATALOG, replace(limits(), restrictions=CostRestrictions(restricted_models=["gpt-5-nano"])))


def test_the_quality_bias_moves_the_complexity_tier_and_auto_escalation_off_caps_learning() -> None:
    feats = features(MODERATE, 20)
    prefs = TierPreferences(workspace_id="acme/w")
    low, mid, high = (target_tier(feats, prefs, bias).rank for bias in (0.0, 0.5, 1.0))
    assert low < mid < high
    cands = candidates()
    best = [replace(c, quality=0.99 if c.model.tier is Tier.complex else 0.5) for c in cands]
    assert decide("learning", best, Tier.standard, feats, 0.5, None).candidate.model.tier is Tier.complex
    capped = decide("learning", best, Tier.standard, feats, 0.5, None, escalate=False)
    assert capped.candidate.model.tier.rank <= Tier.standard.rank


def test_the_prior_matches_the_complexity_tiers() -> None:
    """With no evidence, the cheapest tier predicted at 0.85 is the complexity strategy's tier."""
    for complexity in (0.1, 0.3, 0.5, 0.7, 0.9):
        tier = tier_for(complexity)
        in_tier = [m for m in CATALOG.models if m.tier is tier]
        below = [m for m in CATALOG.models if m.tier.rank < tier.rank]
        assert max(prior_quality(m.quality_prior, complexity) for m in in_tier) >= 0.84
        assert all(prior_quality(m.quality_prior, complexity) < 0.85 for m in below)


def test_the_text_learner_learns_which_prompts_a_model_gets_right() -> None:
    maths = [text_features(f"What is {i} plus {i + 3}? Show your working.", "math", "normal") for i in range(40)]
    poems = [text_features(f"Write a poem about the sea, verse {i}.", "creative", "normal") for i in range(40)]
    model = TextModel()
    weights: dict[int, tuple[float, float]] = {}
    for _ in range(3):
        for feats, quality in [*((f, 1.0) for f in maths), *((f, 0.0) for f in poems)]:
            update = learn(model.bias, model.bias_g, weights, feats, logit(0.5), quality)
            weights.update(update.weights)
            model.bias, model.bias_g = update.bias, update.bias_g
    model.weights = {f: w for f, (w, _) in weights.items()}
    model.examples = 240
    unseen_maths = text_features("What is 7 plus 12? Show your working.", "math", "normal")
    unseen_poem = text_features("Write a poem about the mountains.", "creative", "normal")
    assert sigmoid(logit(0.5) + model.adjustment(unseen_maths)) > 0.8
    assert sigmoid(logit(0.5) + model.adjustment(unseen_poem)) < 0.2
    assert text_features("Same text", "factual", "normal") == text_features("Same text", "factual", "normal")


def test_observed_quality_moves_the_prior_by_sample_count() -> None:
    assert base_quality(0.5, None, 0) == 0.5
    assert base_quality(0.5, 1.0, 8) == 0.75
    assert base_quality(0.5, 1.0, 800) > 0.99
    assert confidence(0) == 0 and confidence(8) == 0.5
