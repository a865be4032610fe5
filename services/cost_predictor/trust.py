"""Pure rules of which costs Routewise trusts: whether a reported cost is plausible at the known
price, whether it is a call of its task's decision, and what an adjustment of a recorded cost changes.

No I/O here: the handlers price the call with the price book and pass the figures in.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID, uuid5

from pydantic import ValidationError

from routewise.contracts.cost import PriceUsage
from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import MAX_CALL_COST_USD, CostRecorded, CostRefusal, CostRefused, CostReported
from routewise.estimates import price
from routewise.services.cost_predictor.pricing import PriceBook


@dataclass(frozen=True)
class Plausibility:
    """How far a reported cost may be from its price (``ROUTEWISE_COST_PLAUSIBILITY_*``)."""

    ratio: Decimal = Decimal(10)
    """Refused above ``ratio`` × the price, or below the price / ``ratio``..."""
    floor_usd: Decimal = Decimal("0.01")
    """...unless it is within this many dollars of the price (rounding of tiny calls)."""
    allow_self_priced: bool = False
    """Accept what would be refused (but never more than a call may cost), flagged self-priced."""


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    self_priced: bool = False
    reason: CostRefusal | None = None
    """Why it is refused, or (self-priced) would have been."""
    detail: str = ""


def _plain(amount: Decimal) -> str:
    return f"{amount.normalize():f}"


def _usd(amount: Decimal) -> str:
    return f"${_plain(amount)}"


def judge(reported: Decimal, expected: Decimal | None, rule: Plausibility, *, failed: bool = False) -> Verdict:
    """Whether a reported cost is accepted.

    ``expected``: what the call's tokens cost at the known price; None when no price is known
    (``unknown_model``). A cost beyond ``ratio`` times the price, or under the price / ``ratio``, is
    ``implausible_cost`` — unless it is within ``floor_usd`` of the price. A failed call may cost
    less than its tokens (providers often charge nothing for one): only too much is refused.
    More than any call may cost (``MAX_CALL_COST_USD``) is refused whatever the deployment allows.
    """
    if reported > MAX_CALL_COST_USD:
        return Verdict(
            False,
            reason=CostRefusal.implausible_cost,
            detail=f"{_usd(reported)} is more than one call may cost ({_usd(MAX_CALL_COST_USD)})",
        )
    if expected is None:
        problem = Verdict(False, reason=CostRefusal.unknown_model, detail="no price is known for the model")
    elif abs(reported - expected) <= rule.floor_usd:
        return Verdict(True)
    elif reported > expected * rule.ratio:
        problem = Verdict(
            False,
            reason=CostRefusal.implausible_cost,
            detail=f"{_usd(reported)} is more than {_plain(rule.ratio)} times what its tokens cost ({_usd(expected)})",
        )
    elif reported * rule.ratio < expected and not failed:
        problem = Verdict(
            False,
            reason=CostRefusal.implausible_cost,
            detail=f"{_usd(reported)} is less than 1/{_plain(rule.ratio)} of what its tokens cost ({_usd(expected)})",
        )
    else:
        return Verdict(True)
    if rule.allow_self_priced:
        return Verdict(True, self_priced=True, reason=problem.reason, detail=problem.detail)
    return problem


@dataclass(frozen=True)
class Decision:
    """What cost-predictor knows of a task's decision (ModelSelected): its org, and the models the
    task may call — the chosen one, then its fallback chain."""

    org_id: str
    models: tuple[str, ...]


def against_decision(
    event: CostReported, decision: Decision | None, names: Collection[str], wait_s: float
) -> Verdict | None:
    """Why a reported call is not one of its task's decision (None: it is). ``names``: the model
    as reported and as the price book resolves it (``openai/gpt-4o`` is ``gpt-4o``). Refused
    whatever the deployment allows: this is not about the price, but about whose call it is — a
    report of a task never routed, another org's task, or a model the task did not run would
    otherwise count in every org's model statistics (a failed call costs nothing). ``wait_s``: how
    long a report waits for its decision (said in the refusal)."""
    org = event.scope.org_id
    if decision is None or decision.org_id != org:
        return Verdict(
            False,
            reason=CostRefusal.unknown_task,
            detail=f"no decision of task {event.task_id} is known in org {org}: only the calls of a task"
            f" Routewise routed are counted (a report waits up to {wait_s:g} s for its decision)",
        )
    if not set(names) & set(decision.models):
        chosen, *fallbacks = decision.models
        also = f" (fallbacks: {', '.join(fallbacks)})" if fallbacks else " (no fallbacks)"
        return Verdict(
            False,
            reason=CostRefusal.model_not_in_decision,
            detail=f"task {event.task_id} was routed to {chosen}{also}, not to {event.model}",
        )
    return None


@dataclass(frozen=True)
class Change:
    """What an adjustment does to a recorded cost."""

    previous: Decimal
    cost: Decimal
    void: bool

    @property
    def delta(self) -> Decimal:
        return self.cost - self.previous


def adjustment(current: Decimal, new_cost: Decimal | None, *, void: bool) -> Change:
    """The change a correction (``new_cost``) or a void makes to a cost that stands at ``current``;
    ValueError when it changes nothing."""
    cost = Decimal(0) if void else new_cost
    if cost is None:
        raise ValueError("give the right cost, or void it")
    if cost == current:
        what = "already void (0)" if void else f"already {_usd(current)}"
        raise ValueError(f"the cost is {what}: nothing to change")
    return Change(current, cost, void)


VERDICT_IDS = UUID("5a7c1e0d-8b3f-5d42-9c6e-2f1a0b4d7e93")
"""Names the ids of the verdict on a reported cost: the same on every redelivery of the report."""


def recorded_id(reported: UUID) -> UUID:
    """The id of the CostRecorded a reported cost is accepted as (not the report's own: both travel
    on one stream, whose duplicate window would drop the second)."""
    return uuid5(VERDICT_IDS, f"recorded:{reported}")


def refused_id(reported: UUID) -> UUID:
    return uuid5(VERDICT_IDS, f"refused:{reported}")


def expected_cost(book: PriceBook, event: CostReported) -> tuple[Decimal | None, str]:
    """What the call's tokens cost at the known price, or (None, why no price is known)."""
    try:
        usage = PriceUsage(
            model=event.model,
            provider=event.provider.lower(),
            input_tokens=event.input_tokens,
            output_tokens=event.output_tokens,
            cached_input_tokens=event.cached_input_tokens,
            cache_write_tokens=event.cache_write_tokens,
        )
    except ValidationError:
        return None, f"{event.provider!r} is not a provider the price book knows"
    try:
        return price(book, usage).cost_usd, ""
    except RoutewiseError as exc:
        return None, exc.message


def recorded(event: CostReported, *, self_priced: bool) -> CostRecorded:
    """The reported cost, accepted: the same call, cost and time (its budget period), its own id."""
    fields = event.model_dump(exclude={"event_id", "schema_version"})
    return CostRecorded(
        **fields, event_id=recorded_id(event.event_id), self_priced=self_priced, reported_event_id=event.event_id
    )


def refused(event: CostReported, verdict: Verdict, expected: Decimal | None, why_unpriced: str) -> CostRefused:
    assert verdict.reason is not None
    detail = verdict.detail
    if verdict.reason is CostRefusal.unknown_model and why_unpriced:
        detail = f"{detail}: {why_unpriced}"
    return CostRefused(
        event_id=refused_id(event.event_id),
        task_id=event.task_id,
        scope=event.scope,
        attempt=event.attempt,
        model=event.model,
        provider=event.provider,
        reported_event_id=event.event_id,
        reason=verdict.reason,
        detail=detail[:20_000],
        reported_cost_usd=event.cost_usd,
        expected_cost_usd=expected,
    )
