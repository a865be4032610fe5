"""Pure selection rules: prompt features, complexity → tier, and the choice among estimates."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from routewise.contracts.budget import CostRestrictions
from routewise.contracts.catalog import Catalog, CatalogModel
from routewise.contracts.cost import ModelEstimate
from routewise.contracts.events import HIGH_CONFIDENCE, Constraints, Strategy, Tier, fixed_point
from routewise.contracts.routing import TierPreferences

_REASONING = re.compile(
    r"\b(prove|derive|analy[sz]e|architect(ure)?|design|optimi[sz]e|trade-?offs?|compare|evaluate|"
    r"step[- ]by[- ]step|refactor|debug|investigate|root cause|strategy|plan|concurren\w*|distributed)\b",
    re.IGNORECASE,
)
_CODE = re.compile(r"```|\bdef \w+\(|\bclass \w+|\bfunction\b|\bstack ?trace\b|\bTraceback\b|=>|;\s*$", re.MULTILINE)
_MATH = re.compile(
    r"\b(integral|derivative|equation|theorem|probability|matrix|solve for)\b|\d+\s*[-+*/^=]\s*\d+", re.IGNORECASE
)
_CREATIVE = re.compile(r"\b(poem|story|lyrics|slogan|novel|haiku|creative)\b", re.IGNORECASE)
_OPS = re.compile(
    r"\b(deploy\w*|kubernetes|k8s|docker|logs?|incident|outage|server|latency|cpu|memory leak)\b", re.IGNORECASE
)
_ANALYSIS = re.compile(r"\b(analy[sz]e|compare|evaluate|assess|review|summari[sz]e)\b", re.IGNORECASE)

# Upper bounds of the complexity score for each tier.
TIER_BOUNDS: tuple[tuple[float, Tier], ...] = (
    (0.25, Tier.micro),
    (0.40, Tier.standard),
    (0.60, Tier.versatile),
    (0.80, Tier.heavy),
    (1.01, Tier.complex),
)


@dataclass(frozen=True)
class Features:
    complexity: float
    pattern: str
    input_tokens: int


def detect_pattern(text: str) -> str:
    if _CODE.search(text):
        return "code"
    if _MATH.search(text):
        return "math"
    if _OPS.search(text):
        return "ops"
    if _CREATIVE.search(text):
        return "creative"
    if _ANALYSIS.search(text):
        return "analysis"
    return "factual"


def complexity_score(text: str, input_tokens: int) -> float:
    """0..1: longer prompts, reasoning vocabulary, code and maths push it up."""
    length = min(input_tokens / 1500, 1.0) * 0.35
    reasoning = min(len(_REASONING.findall(text)), 4) * 0.1
    code = 0.1 if _CODE.search(text) else 0.0
    math = 0.1 if _MATH.search(text) else 0.0
    questions = min(text.count("?"), 3) * 0.02
    return round(min(0.05 + length + reasoning + code + math + questions, 1.0), 4)


def features(text: str, input_tokens: int) -> Features:
    return Features(complexity_score(text, input_tokens), detect_pattern(text), input_tokens)


def tier_for(complexity: float) -> Tier:
    for bound, tier in TIER_BOUNDS:
        if complexity < bound:
            return tier
    return Tier.complex


BIAS_SHIFT = 0.4
"""How far the quality bias moves the complexity score: ±0.2 at bias 0 or 1 (about one tier)."""


def target_tier(feats: Features, prefs: TierPreferences, bias: float = 0.5) -> Tier:
    """The tier of the complexity score moved by the quality bias (or the workspace's default
    tier without auto-escalation), within the workspace's min and max tier."""
    shifted = min(max(feats.complexity + (bias - 0.5) * BIAS_SHIFT, 0.0), 1.0)
    tier = tier_for(shifted) if prefs.auto_escalation else prefs.default_tier
    if prefs.min_tier is not None and tier.rank < prefs.min_tier.rank:
        tier = prefs.min_tier
    if prefs.max_tier is not None and tier.rank > prefs.max_tier.rank:
        tier = prefs.max_tier
    return tier


@dataclass(frozen=True)
class Policy:
    name: str
    models: tuple[str, ...]
    max_cost: Decimal | None = None
    max_tokens: int | None = None

    @property
    def baseline(self) -> str:
        return self.models[0]


@dataclass(frozen=True)
class Candidate:
    model: CatalogModel
    estimate: ModelEstimate
    quality: float
    confidence: float

    @property
    def cost(self) -> Decimal:
        return self.estimate.cost_usd_p50


@dataclass(frozen=True)
class Limits:
    """Everything that rules a model out for a task, whatever the strategy."""

    policy: Policy
    prefs: TierPreferences
    constraints: Constraints
    demoted: frozenset[str] = frozenset()
    latency_p95_ms: Mapping[str, float] = field(default_factory=dict)
    restrictions: CostRestrictions | None = None
    """The budgets' restrictions in force (known after a refusal, or asked for by a preview)."""

    def why_not(self, model: CatalogModel, estimate: ModelEstimate | None, quality: float) -> str | None:
        """Why ``model`` may not run this task (None: it may)."""
        return next(self._objections(model, estimate, quality), None)

    def _objections(self, model: CatalogModel, estimate: ModelEstimate | None, quality: float) -> Iterator[str]:
        """Every reason against ``model``, the first one first (the one ``why_not`` gives)."""
        if estimate is None:
            yield "no cost estimate"
            return
        yield from self._placement(model, estimate)
        yield from self._caps(estimate.cost_usd_p90)
        yield from self._budget_restrictions(model, estimate.cost_usd_p90)
        yield from self._task_needs(model, quality)

    def _placement(self, model: CatalogModel, estimate: ModelEstimate) -> Iterator[str]:
        """The prompt's size, the task's providers, the workspace's tiers and the model's health."""
        prefs, c = self.prefs, self.constraints
        if not estimate.fits_context:
            yield f"the prompt ({estimate.input_tokens} tokens) exceeds its context window ({estimate.context_window})"
        if c.allowed_providers is not None and model.provider not in c.allowed_providers:
            yield f"provider {model.provider} is not in the task's allowed providers"
        if prefs.min_tier is not None and model.tier.rank < prefs.min_tier.rank:
            yield f"tier {model.tier.value} is below the workspace's min tier {prefs.min_tier.value}"
        if prefs.max_tier is not None and model.tier.rank > prefs.max_tier.rank:
            yield f"tier {model.tier.value} is above the workspace's max tier {prefs.max_tier.value}"
        if model.id in self.demoted:
            yield "demoted by performance-tracker (unhealthy)"

    def _caps(self, p90: Decimal) -> Iterator[str]:
        """The policy's, the task's and the workspace's caps on what one task may cost."""
        for cap, whose in (
            (self.policy.max_cost, f"policy {self.policy.name}'s max per task"),
            (self.constraints.max_cost_usd, "the task's max cost"),
            (self.prefs.max_cost_per_request_usd, "the workspace's max per request"),
        ):
            if cap is not None and p90 > cap:
                yield f"p90 estimate ${fixed_point(p90)} is above {whose} (${fixed_point(cap)})"

    def _budget_restrictions(self, model: CatalogModel, p90: Decimal) -> Iterator[str]:
        r = self.restrictions
        if r is None:
            return
        if model.id in r.restricted_models:
            yield "restricted by a budget"
        if r.max_tier is not None and model.tier.rank > r.max_tier.rank:
            yield f"tier {model.tier.value} is above a budget's tier cap ({r.max_tier.value})"
        if r.max_cost_per_request is not None and p90 > r.max_cost_per_request:
            yield f"p90 estimate ${fixed_point(p90)} is above a budget's max per request"

    def _task_needs(self, model: CatalogModel, quality: float) -> Iterator[str]:
        """The task's minimum quality and latency SLO."""
        c = self.constraints
        if c.min_quality is not None and quality < c.min_quality:
            yield f"predicted quality {quality:.2f} is below the task's min quality {c.min_quality:.2f}"
        latency = self.latency_p95_ms.get(model.id)
        if c.latency_slo_ms is not None and latency is not None and latency > c.latency_slo_ms:
            yield f"observed p95 latency {latency:.0f} ms is above the task's SLO ({c.latency_slo_ms} ms)"


@dataclass(frozen=True)
class Screened:
    candidates: list[Candidate]
    excluded: dict[str, str]
    note: str = ""


def screen(
    catalog: Catalog,
    limits: Limits,
    estimates: Mapping[str, ModelEstimate],
    predicted: Mapping[str, tuple[float, float]],
    unroutable: Mapping[str, str] | None = None,
) -> Screened:
    """The policy's models that may run the task, each with its predicted (quality, confidence)
    (``predicted`` has every routable catalog model of the policy), and the others with the reason
    they may not. ``unroutable``: catalog models that may not be routed at all (no price), and why.
    Preferred providers narrow the candidates when one of theirs qualifies."""
    candidates: list[Candidate] = []
    excluded: dict[str, str] = {}
    for model_id in limits.policy.models:
        model = catalog.get(model_id)
        if model is None:
            excluded[model_id] = "not in the model catalog"
            continue
        if unroutable and model_id in unroutable:
            excluded[model_id] = f"not routable: {unroutable[model_id]}"
            continue
        quality, conf = predicted[model_id]
        reason = limits.why_not(model, estimates.get(model_id), quality)
        if reason is None:
            candidates.append(Candidate(model, estimates[model_id], quality, conf))
        else:
            excluded[model_id] = reason
    preferred = limits.prefs.preferred_providers
    note = ""
    if preferred:
        kept = [c for c in candidates if c.model.provider in preferred]
        if kept:
            for c in candidates:
                if c.model.provider not in preferred:
                    excluded[c.model.id] = f"the workspace prefers {', '.join(preferred)}"
            candidates = kept
            note = f"preferred providers: {', '.join(preferred)}"
        elif candidates:
            note = f"no model of the preferred providers ({', '.join(preferred)}) qualifies"
    return Screened(candidates, excluded, note)


@dataclass(frozen=True)
class Pick:
    candidate: Candidate
    strategy: Strategy
    reasoning: str
    experimental: bool = False
    fallback_reason: str | None = None


QUALITY_TARGET_AT_ZERO_BIAS = 0.70


def quality_target(bias: float) -> float:
    """The predicted quality the learning strategy looks for: 0.70 at bias 0, 0.85 at 0.5, 1.0 at 1."""
    return QUALITY_TARGET_AT_ZERO_BIAS + (1 - QUALITY_TARGET_AT_ZERO_BIAS) * bias


def by_complexity(candidates: list[Candidate], tier: Tier, feats: Features) -> Pick:
    """The cheapest candidate of the target tier; without one, the nearest tier above, then below."""
    tiers = sorted({c.model.tier for c in candidates}, key=lambda t: (t.rank < tier.rank, abs(t.rank - tier.rank)))
    used = tiers[0]
    chosen = min(
        (c for c in candidates if c.model.tier is used), key=lambda c: (c.cost, -c.model.quality_prior, c.model.id)
    )
    moved = "" if used is tier else f"; no {tier.value} candidate, using {used.value}"
    reasoning = (
        f"complexity {feats.complexity:.2f} ({feats.pattern}, {feats.input_tokens} input tokens) → tier "
        f"{tier.value}{moved}; {chosen.model.id} is the cheapest {used.value} candidate at ${fixed_point(chosen.cost)}"
    )
    return Pick(chosen, "complexity", reasoning)


def by_learning(candidates: list[Candidate], bias: float) -> Pick:
    """The cheapest candidate predicted to reach the quality target; without one, the best predicted."""
    target = quality_target(bias)
    good = [c for c in candidates if c.quality >= target]
    if good:
        chosen = min(good, key=lambda c: (c.cost, -c.quality, c.model.id))
        why = f"the cheapest candidate predicted at quality ≥ {target:.2f} (bias {bias:.2f})"
    else:
        chosen = max(candidates, key=lambda c: (c.quality, -c.cost))
        why = f"no candidate is predicted at quality ≥ {target:.2f} (bias {bias:.2f}); the best predicted"
    reasoning = (
        f"learning: {chosen.model.id} ({chosen.model.tier.value}) predicted quality {chosen.quality:.2f} "
        f"(confidence {chosen.confidence:.2f}) at ${fixed_point(chosen.cost)}: {why}"
    )
    return Pick(chosen, "learning", reasoning)


def by_hybrid(learned: Pick, complexity: Pick) -> Pick:
    """Learning validated by complexity. A confident learned choice stands when it is within one
    tier of complexity's and is overruled by complexity otherwise; a learned choice with little
    evidence behind it stands but is marked experimental (it is how the learner gathers data)."""
    distance = abs(learned.candidate.model.tier.rank - complexity.candidate.model.tier.rank)
    confident = learned.candidate.confidence >= HIGH_CONFIDENCE
    if distance > 1 and confident:
        reason = (
            f"learning chose {learned.candidate.model.id} ({learned.candidate.model.tier.value}), {distance} tiers "
            f"from complexity's {complexity.candidate.model.tier.value}: complexity overrules it"
        )
        return Pick(complexity.candidate, "complexity", f"{complexity.reasoning}; {reason}", fallback_reason=reason)
    validated = "validated by complexity (within one tier)" if distance <= 1 else "not validated (experimental)"
    return Pick(
        learned.candidate,
        "hybrid",
        f"{learned.reasoning}; {validated}",
        experimental=not confident,
    )


def decide(
    strategy: Strategy,
    candidates: list[Candidate],
    tier: Tier,
    feats: Features,
    bias: float,
    learning_error: str | None,
    *,
    escalate: bool = True,
) -> Pick:
    """Run the strategy; any error of the learner falls back to complexity with the reason.
    Without ``escalate`` (the workspace turned auto-escalation off) learning stays at or below
    the target tier too."""
    complexity = by_complexity(candidates, tier, feats)
    if strategy == "complexity":
        return complexity
    if learning_error is not None:
        reason = f"{strategy} failed ({learning_error}); complexity decided"
        return Pick(complexity.candidate, "complexity", f"{complexity.reasoning}; {reason}", fallback_reason=reason)
    allowed = candidates if escalate else [c for c in candidates if c.model.tier.rank <= tier.rank]
    learned = by_learning(allowed or candidates, bias)
    return learned if strategy == "learning" else by_hybrid(learned, complexity)


def fallback_chain(
    candidates: list[Candidate],
    chosen: Candidate,
    limits: Limits,
    *,
    enabled: bool,
    refused: frozenset[str] = frozenset(),
    length: int = 4,
) -> list[str]:
    """Models to fail over to: candidates of the chosen tier or above that no budget refused and
    the restrictions in force allow, the nearest and cheapest first."""
    if not enabled:
        return []
    rank = chosen.model.tier.rank
    others = [
        c
        for c in candidates
        if c.model.id != chosen.model.id
        and c.model.tier.rank >= rank
        and c.model.id not in refused
        and limits.why_not(c.model, c.estimate, c.quality) is None
    ]
    others.sort(key=lambda c: (c.model.tier.rank, c.cost))
    return [c.model.id for c in others[:length]]


def cheaper_candidates(candidates: list[Candidate], current: Candidate, limits: Limits) -> list[Candidate]:
    """Candidates to try after ``current`` is refused by a budget: a strictly smaller hold (p90)
    and allowed by ``limits`` (which now carry the budget's restrictions); the closest first."""
    ceiling = current.estimate.cost_usd_p90
    found = [
        c
        for c in candidates
        if c.estimate.cost_usd_p90 < ceiling and limits.why_not(c.model, c.estimate, c.quality) is None
    ]
    return sorted(found, key=lambda c: c.estimate.cost_usd_p90, reverse=True)


def validate(candidate: Candidate, catalog: Catalog, limits: Limits) -> None:
    """The check right before a model is reserved and published, against the limits as they are
    now (a model demoted while the task was being decided is caught here)."""
    known = catalog.get(candidate.model.id)
    if known is None:
        raise ValueError(f"{candidate.model.id} is not in the catalog")
    reason = limits.why_not(known, candidate.estimate, candidate.quality)
    if reason is not None:
        raise ValueError(f"{candidate.model.id}: {reason}")
