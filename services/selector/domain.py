"""Pure selection rules: prompt features, complexity → tier, and the choice among estimates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from shared.catalog import Catalog, CatalogModel
from shared.events import Tier
from shared.requests import ModelEstimate

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


@dataclass(frozen=True)
class Choice:
    model: CatalogModel
    estimate: ModelEstimate
    fallback_chain: list[str]
    reasoning: str


def choose(catalog: Catalog, tier: Tier, estimates: dict[str, ModelEstimate], feats: Features) -> Choice:
    """The cheapest model of the task's tier that can hold the prompt.

    When no model of that tier can hold it, the nearest tier above (then below) that has
    one. The fallback chain is the rest of that tier, cheapest first, then the next tier up.
    """
    fitting = [m for m in catalog.models if m.id in estimates and estimates[m.id].fits_context]
    if not fitting:
        raise LookupError("no catalog model can hold the prompt")
    tiers = sorted({m.tier for m in fitting}, key=lambda t: (t.rank < tier.rank, abs(t.rank - tier.rank)))
    used = tiers[0]

    def by_cost(models: list[CatalogModel]) -> list[CatalogModel]:
        return sorted(models, key=lambda m: (estimates[m.id].cost_usd_p50, -m.quality_prior))

    in_tier = by_cost([m for m in fitting if m.tier is used])
    chosen = in_tier[0]
    upgrades = by_cost([m for m in fitting if m.tier.rank == used.rank + 1])
    fallback = [m.id for m in in_tier[1:]] + [m.id for m in upgrades]
    cost = estimates[chosen.id].cost_usd_p50
    moved = "" if used is tier else f" (no {tier.value} model holds {feats.input_tokens} tokens; using {used.value})"
    reasoning = (
        f"complexity {feats.complexity:.2f} ({feats.pattern}, {feats.input_tokens} input tokens) "
        f"→ tier {tier.value}{moved}; {chosen.id} is the cheapest {used.value} model at ${_fmt(cost)}"
    )
    return Choice(chosen, estimates[chosen.id], fallback, reasoning)


def _fmt(amount: Decimal) -> str:
    return f"{amount:.6f}".rstrip("0").rstrip(".") if amount else "0"


def cheaper_candidates(
    catalog: Catalog,
    estimates: dict[str, ModelEstimate],
    current: CatalogModel,
    *,
    max_tier: Tier | None = None,
    restricted: frozenset[str] = frozenset(),
    max_cost: Decimal | None = None,
) -> list[CatalogModel]:
    """Models to try after ``current`` is refused by a budget: strictly cheaper (p50), holding
    the prompt, within the restrictions in force; the closest in price first."""
    ceiling = estimates[current.id].cost_usd_p50
    found = [
        m
        for m in catalog.models
        if m.id in estimates
        and estimates[m.id].fits_context
        and estimates[m.id].cost_usd_p50 < ceiling
        and m.id not in restricted
        and (max_tier is None or m.tier.rank <= max_tier.rank)
        and (max_cost is None or estimates[m.id].cost_usd_p90 <= max_cost)
    ]
    return sorted(found, key=lambda m: estimates[m.id].cost_usd_p50, reverse=True)
