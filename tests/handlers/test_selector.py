"""selector's handlers called directly: real Postgres, no bus; quotes priced by cost-predictor's
estimator and budgets held in memory (tests/handlers/selector_twins.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from routewise.contracts.catalog import Catalog, default_catalog
from routewise.contracts.cost import EstimateCost
from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import (
    ChatMessage,
    Constraints,
    FeedbackRecorded,
    ModelSelected,
    RejectionReason,
    Scope,
    TaskArrived,
    TaskRejected,
    Tier,
)
from routewise.contracts.performance import ModelHealth, PerformanceSnapshot
from routewise.contracts.routing import (
    DeleteTierPreferences,
    GetDecision,
    GetTierPreferences,
    ListPolicies,
    SetPolicy,
    SetTierPreferences,
    TierPreferences,
)
from routewise.contracts.subjects import snapshot_key
from routewise.runtime.catalog import LiveCatalog
from routewise.runtime.db import claim
from routewise.runtime.settings import Settings
from routewise.services.selector import handlers
from routewise.services.selector.handlers import SelectorDeps
from tests.handlers.selector_twins import ListedSnapshots, MemoryBudgets, PricedQuotes

SIMPLE = "What is the capital of France?"
MODERATE = "Compare two approaches to caching in a web service and evaluate the trade-offs."


@pytest.fixture
def quotes() -> PricedQuotes:
    return PricedQuotes()


@pytest.fixture
def budgets() -> MemoryBudgets:
    return MemoryBudgets()


@pytest.fixture
async def deps(
    service_pool: Callable[[str], Awaitable[asyncpg.Pool]],
    settings: Settings,
    quotes: PricedQuotes,
    budgets: MemoryBudgets,
) -> SelectorDeps:
    pool = await service_pool("selector")
    return SelectorDeps(pool=pool, settings=settings, quotes=quotes, budgets=budgets, snapshot_feed=ListedSnapshots())


def a_task(prompt: str = SIMPLE, **fields: object) -> TaskArrived:
    scope = fields.pop("scope", None) or Scope(org_id=f"org-{uuid.uuid4().hex[:8]}")
    return TaskArrived(scope=scope, prompt=prompt, **fields)


async def published(
    admin: asyncpg.Connection, deps: SelectorDeps, task: TaskArrived
) -> list[ModelSelected | TaskRejected]:
    """What the selector put in its outbox for ``task`` (on its org's subjects), oldest first."""
    org = task.scope.org_id
    selected = deps.subjects.for_org("model_selected", org)
    rows = await admin.fetch(
        "SELECT subject, payload FROM selector.outbox WHERE subject = ANY($1::text[]) ORDER BY created_at",
        [selected, deps.subjects.for_org("task_rejected", org)],
    )
    found: list[ModelSelected | TaskRejected] = []
    for row in rows:
        kind = ModelSelected if row["subject"] == selected else TaskRejected
        event = kind.model_validate_json(row["payload"])
        if event.task_id == task.task_id:
            found.append(event)
    return found


async def decided(admin: asyncpg.Connection, deps: SelectorDeps, task: TaskArrived) -> ModelSelected | TaskRejected:
    await handlers.decide_task_arrived(task, deps)
    [outcome] = await published(admin, deps, task)
    return outcome


async def apply_once(event: FeedbackRecorded, deps: SelectorDeps) -> None:
    """As the runtime applies an event: claimed in the inbox, handled in the same transaction."""
    async with deps.transaction() as uow:
        if await claim(uow.conn, event.event_id, deps.subjects.of(FeedbackRecorded)):
            await handlers.learn_feedback(event, uow, deps)


async def test_a_simple_prompt_gets_a_cheap_micro_model_and_a_reservation(
    deps: SelectorDeps, budgets: MemoryBudgets, admin: asyncpg.Connection
) -> None:
    task = a_task(SIMPLE)

    outcome = await decided(admin, deps, task)
    decision = await handlers.get_decision(GetDecision(task_id=task.task_id), deps)

    assert isinstance(outcome, ModelSelected)
    assert outcome.tier is Tier.micro and outcome.policy == "normal" and outcome.strategy == "complexity"
    assert outcome.estimated_cost_usd < outcome.baseline_cost_usd
    hold = budgets.holds[task.task_id]
    assert outcome.reservation_id == hold.reservation_id and hold.amount_usd >= outcome.estimated_cost_usd
    assert decision.status == "selected" and decision.model == outcome.model and decision.tier is Tier.micro
    assert decision.estimated_cost_usd == outcome.estimated_cost_usd


async def test_allowed_models_are_the_only_candidates_whatever_the_policy_lists(
    deps: SelectorDeps, budgets: MemoryBudgets, admin: asyncpg.Connection
) -> None:
    """The gateway forces a model the caller named: the decision is that model (held and recorded
    like any), even one the task type's policy does not list, and a too-costly one is still refused."""
    forced = a_task(SIMPLE, constraints=Constraints(allowed_models=["claude-opus-4-1"]))
    capped = a_task(SIMPLE, constraints=Constraints(allowed_models=["claude-opus-4-1"], max_cost_usd=Decimal("1e-9")))

    outcome = await decided(admin, deps, forced)
    refused = await decided(admin, deps, capped)

    assert isinstance(outcome, ModelSelected)
    assert (
        outcome.model == "claude-opus-4-1" and outcome.fallback_chain == [] and outcome.baseline_model == outcome.model
    )
    assert budgets.holds[forced.task_id].reservation_id == outcome.reservation_id
    assert isinstance(refused, TaskRejected) and refused.reason is RejectionReason.no_model_within_constraints


async def test_a_budget_refusal_downgrades_to_a_cheaper_model_then_rejects_with_the_budgets_reason(
    deps: SelectorDeps, budgets: MemoryBudgets, admin: asyncpg.Connection
) -> None:
    first = a_task(MODERATE)
    unlimited = await decided(admin, deps, first)
    assert isinstance(unlimited, ModelSelected)
    full_hold = budgets.holds.pop(first.task_id).amount_usd

    budgets.limit_usd = full_hold - Decimal("0.000000000001")  # any strictly smaller hold fits
    squeezed = await decided(admin, deps, a_task(MODERATE))
    budgets.limit_usd = Decimal(0)
    broke_task = a_task(MODERATE)
    broke = await decided(admin, deps, broke_task)

    assert isinstance(squeezed, ModelSelected)
    assert squeezed.model != unlimited.model and squeezed.estimated_cost_usd < unlimited.estimated_cost_usd
    assert (
        f"{unlimited.model} refused" in squeezed.reasoning and f"downgraded to {squeezed.model}" in squeezed.reasoning
    )
    assert unlimited.model not in squeezed.fallback_chain  # the budget refused it: no failing over to it
    assert isinstance(broke, TaskRejected)
    assert broke.reason is RejectionReason.budget_exhausted and broke.budget_id == budgets.budget_id
    assert "hard budget" in broke.detail and f"tried {unlimited.model}" in broke.detail
    assert (await handlers.get_decision(GetDecision(task_id=broke_task.task_id), deps)).status == "rejected"


async def test_a_preview_decides_but_reserves_and_records_nothing(
    deps: SelectorDeps, budgets: MemoryBudgets, quotes: PricedQuotes, admin: asyncpg.Connection
) -> None:
    task = a_task(SIMPLE)

    shown = await handlers.preview(task, deps)

    assert shown.selected is not None and shown.rejected is None
    assert shown.selected.tier is Tier.micro and shown.selected.reservation_id is None
    assert "preview: no budget reserved" in shown.selected.reasoning
    assert shown.policy == "normal" and shown.target_tier is Tier.micro
    assert budgets.asked == [] and budgets.status_asked == 1  # restrictions asked, nothing held
    assert quotes.asked[-1].task_id is None  # the estimate is not kept for a task that may never run
    assert await published(admin, deps, task) == []
    with pytest.raises(RoutewiseError) as missing:
        await handlers.get_decision(GetDecision(task_id=task.task_id), deps)
    assert missing.value.code == "not_found"


async def test_policies_are_set_and_listed_and_route_their_task_types(deps: SelectorDeps) -> None:
    name, task_type = f"p_{uuid.uuid4().hex[:8]}", f"tt_{uuid.uuid4().hex[:8]}"

    saved = await handlers.set_policy(
        SetPolicy(name=name, models=["claude-haiku-4-5", "gpt-4o-mini"], task_types=[task_type], actor="ops@acme"),
        deps,
    )
    listed = await handlers.list_policies(ListPolicies(), deps)
    routed = await handlers.preview(a_task(SIMPLE, task_type=task_type), deps)
    with pytest.raises(RoutewiseError) as refused:
        await handlers.set_policy(SetPolicy(name=name, models=["gpt-4o", "gpt-9-ultra"], actor="ops@acme"), deps)

    assert saved.task_types == [task_type] and saved.updated_by == "ops@acme"
    assert listed.default_policy == "normal"
    assert {"normal", name} <= {p.name for p in listed.policies}
    assert routed.selected is not None and routed.selected.policy == name
    assert routed.selected.model in ("claude-haiku-4-5", "gpt-4o-mini")
    assert refused.value.code == "unknown_model" and "gpt-9-ultra" in refused.value.message
    stored = next(p for p in (await handlers.list_policies(ListPolicies(), deps)).policies if p.name == name)
    assert stored.models == ["claude-haiku-4-5", "gpt-4o-mini"]  # the refused change left it as it was


async def test_tier_preferences_are_read_set_obeyed_and_deleted(deps: SelectorDeps) -> None:
    org, local = f"org-{uuid.uuid4().hex[:8]}", f"ws-{uuid.uuid4().hex[:6]}"
    ws = f"{org}/{local}"
    scope = Scope(org_id=org, workspace_id=local)

    defaults = await handlers.get_preferences(GetTierPreferences(workspace_id=ws), deps)
    stored = await handlers.set_preferences(
        SetTierPreferences(preferences=TierPreferences(workspace_id=ws, min_tier=Tier.heavy), actor="lead@acme"), deps
    )
    read = await handlers.get_preferences(GetTierPreferences(workspace_id=ws), deps)
    obeyed = await handlers.preview(a_task(SIMPLE, scope=scope), deps)
    deleted = await handlers.delete_preferences(DeleteTierPreferences(workspace_id=ws, actor="lead@acme"), deps)
    after = await handlers.get_preferences(GetTierPreferences(workspace_id=ws), deps)
    with pytest.raises(RoutewiseError) as again:
        await handlers.delete_preferences(DeleteTierPreferences(workspace_id=ws, actor="lead@acme"), deps)
    with pytest.raises(RoutewiseError) as unknown:
        await handlers.set_preferences(
            SetTierPreferences(
                preferences=TierPreferences(workspace_id=ws, preferred_providers=["acme-ai"]), actor="x"
            ),
            deps,
        )

    assert not defaults.stored and defaults.preferences.default_tier is Tier.standard
    assert stored.stored and stored.preferences.min_tier is Tier.heavy and stored.preferences.updated_by == "lead@acme"
    assert read.stored and read.preferences.min_tier is Tier.heavy
    assert obeyed.selected is not None and obeyed.selected.tier.rank >= Tier.heavy.rank
    assert not deleted.stored and not after.stored and after.preferences.min_tier is None
    assert again.value.code == "not_found"
    assert unknown.value.code == "unknown_provider"


async def test_feedback_teaches_the_learner_once(deps: SelectorDeps, admin: asyncpg.Connection) -> None:
    task = a_task(SIMPLE)
    selected = await decided(admin, deps, task)
    assert isinstance(selected, ModelSelected)
    await handlers.refresh_learner(deps)
    before = deps.text_models[selected.model].examples if selected.model in deps.text_models else 0
    feedback = FeedbackRecorded(task_id=task.task_id, scope=task.scope, model=selected.model, quality=1.0)

    await apply_once(feedback, deps)
    changed = deps.learner_changed.is_set()
    await handlers.refresh_learner(deps)
    learnt = deps.text_models[selected.model].examples
    deps.learner_changed.clear()
    await apply_once(feedback, deps)  # the same event again (a redelivery)
    await handlers.refresh_learner(deps)

    assert changed  # this replica's learner refresh is woken at once
    assert learnt == before + 1
    assert deps.text_models[selected.model].examples == learnt and not deps.learner_changed.is_set()


async def test_feedback_for_a_task_the_selector_never_selected_teaches_nothing(deps: SelectorDeps) -> None:
    feedback = FeedbackRecorded(task_id=uuid.uuid4(), scope=Scope(org_id="org-x"), model="gpt-4o", quality=0.1)

    await apply_once(feedback, deps)

    assert not deps.learner_changed.is_set()


async def test_get_decision_answers_what_was_decided_and_not_found_otherwise(
    deps: SelectorDeps, admin: asyncpg.Connection
) -> None:
    task = a_task(SIMPLE, policy="no_such_policy")

    rejected = await decided(admin, deps, task)
    decision = await handlers.get_decision(GetDecision(task_id=task.task_id), deps)
    with pytest.raises(RoutewiseError) as unknown:
        await handlers.get_decision(GetDecision(task_id=uuid.uuid4()), deps)

    assert isinstance(rejected, TaskRejected) and "no_such_policy" in rejected.detail
    assert decision.status == "rejected" and decision.model is None
    assert decision.reason == RejectionReason.no_model_within_constraints.value
    assert decision.scope == task.scope and decision.task_type == task.task_type
    assert unknown.value.code == "not_found"


async def test_a_repeat_of_a_selected_task_is_ignored(
    deps: SelectorDeps, budgets: MemoryBudgets, admin: asyncpg.Connection
) -> None:
    task = a_task(SIMPLE)
    first = await decided(admin, deps, task)
    reservations = len(budgets.asked)

    await handlers.decide_task_arrived(task, deps)  # the same event, redelivered
    await handlers.decide_task_arrived(task.model_copy(update={"event_id": uuid.uuid4()}), deps)  # submitted again

    assert isinstance(first, ModelSelected)
    assert len(budgets.asked) == reservations  # no budget held twice
    assert await published(admin, deps, task) == [first]


async def test_a_task_waits_for_an_unavailable_cost_predictor_and_is_decided_when_it_answers(
    deps: SelectorDeps, quotes: PricedQuotes, admin: asyncpg.Connection
) -> None:
    task = a_task(SIMPLE)
    quotes.down, quotes.down_for = "unavailable", 2

    waited = await decided(admin, deps, task)

    assert isinstance(waited, ModelSelected) and len(quotes.asked) == 3


async def test_a_task_whose_cost_predictor_stays_down_is_rejected_unavailable_at_the_deadline(
    deps: SelectorDeps, quotes: PricedQuotes, admin: asyncpg.Connection
) -> None:
    task = a_task(SIMPLE)
    quotes.down = "timeout"
    impatient = replace(deps, settings=deps.settings.model_copy(update={"decision_deadline": 0.6}))

    rejected = await decided(admin, impatient, task)

    assert isinstance(rejected, TaskRejected) and rejected.reason is RejectionReason.unavailable
    assert "did not answer (timeout)" in rejected.detail and 2 <= len(quotes.asked) <= 4


async def test_a_task_with_an_output_cap_holds_the_call_s_worst_case(
    deps: SelectorDeps, quotes: PricedQuotes, budgets: MemoryBudgets, admin: asyncpg.Connection
) -> None:
    history = [ChatMessage(role="user", content=MODERATE * 40), ChatMessage(role="user", content=SIMPLE)]
    task = TaskArrived(scope=Scope(org_id="acme"), messages=history, constraints=Constraints(max_output_tokens=300))

    selected = await decided(admin, deps, task)
    assert isinstance(selected, ModelSelected)
    worst = await quotes.estimate(
        EstimateCost(messages=history, models=[selected.model], expected_output_tokens=300, max_output_tokens=300)
    )

    assert selected.max_output_tokens == 300 and selected.estimated_output_tokens == 300
    # what the hold covers: every input token at the full price (no cache discount) and 300 output tokens
    assert budgets.holds[task.task_id].amount_usd == worst.estimates[0].cost_usd_p90 == selected.estimated_cost_usd


async def test_a_model_demoted_in_the_snapshots_is_never_chosen(deps: SelectorDeps) -> None:
    chosen = (await handlers.preview(a_task(SIMPLE), deps)).selected
    assert chosen is not None
    now = datetime.now(UTC)
    demoted = PerformanceSnapshot(
        model=chosen.model,
        health=ModelHealth(state="demoted", since=now, reason="error rate"),
        windows={},
        by_task_type={},
        by_pattern={},
        updated_at=now,
        version=1,
    )
    deps.snapshot_feed = ListedSnapshots((snapshot_key(chosen.model), demoted.model_dump_json().encode()))

    await handlers.watch_snapshots(deps)
    after = await handlers.preview(a_task(SIMPLE), deps)

    assert chosen.model in deps.snapshots.demoted
    assert after.selected is not None and after.selected.model != chosen.model
    assert "demoted" in after.excluded[chosen.model]


async def test_an_invalid_task_whose_sender_can_be_read_is_rejected_with_why(deps: SelectorDeps) -> None:
    task_id = uuid.uuid4()
    raw = json.dumps({"task_id": str(task_id), "scope": {"org_id": "acme"}, "prompt": "hi", "quality_bias": 7}).encode()

    await handlers.reject_invalid_task(raw, "quality_bias: Input should be less than or equal to 1", deps)
    await handlers.reject_invalid_task(raw, "quality_bias: Input should be less than or equal to 1", deps)  # again
    await handlers.reject_invalid_task(b"{not json", "request: Invalid JSON", deps)  # nobody to answer

    async with deps.pool.acquire() as conn:
        rejected = deps.subjects.for_org("task_rejected", "acme")  # the org the invalid task names
        rows = await conn.fetch("SELECT subject, payload FROM outbox WHERE subject = $1", rejected)
    answers = [TaskRejected.model_validate_json(r["payload"]) for r in rows]
    mine = [a for a in answers if a.task_id == task_id]
    assert len(mine) == 1  # a redelivery of the same message does not answer twice
    assert mine[0].reason == RejectionReason.invalid_request and "quality_bias" in mine[0].detail


class StalledBucket:
    """A catalog bucket that does not answer (the bus is slow or away)."""

    def __init__(self) -> None:
        self.reads = 0
        self.answers = asyncio.Event()

    async def current(self) -> bytes | None:
        self.reads += 1
        await self.answers.wait()
        return None

    async def watch(self) -> AsyncIterator[bytes | None]:
        await asyncio.Event().wait()
        yield None


async def test_a_policy_naming_a_model_the_catalog_lacks_never_makes_a_decision_wait_on_the_bucket(
    deps: SelectorDeps, admin: asyncpg.Connection
) -> None:
    bucket = StalledBucket()
    deps.live_catalog = LiveCatalog(bucket, default_catalog())
    [normal] = [p for p in (await handlers.list_policies(ListPolicies(), deps)).policies if p.name == "normal"]
    gone = normal.models[0]  # removed from the catalog since the policy named it
    deps.catalog = Catalog(models=[m for m in default_catalog().models if m.id != gone])

    outcomes = [await asyncio.wait_for(decided(admin, deps, a_task(SIMPLE)), 5) for _ in range(3)]

    assert all(isinstance(o, ModelSelected) and o.model != gone for o in outcomes), outcomes
    assert bucket.reads == 1  # read in the background, once (at most once a second)
    bucket.answers.set()
    await asyncio.sleep(0.01)  # the background read ends
