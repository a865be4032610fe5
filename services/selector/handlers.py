"""selector's service layer: TaskArrived → ModelSelected | TaskRejected (through the outbox),
previews, feedback → the text learner, policies and tier preferences, and the jobs that keep
the learner and the performance snapshots current.

Plain functions: each takes its event or request and the service's dependencies; none knows
NATS. What a decision needs of other services (its estimate, priced here over what
cost-predictor publishes; budget-enforcer's holds) are the ``Quotes`` and ``Budgets`` ports of
``SelectorDeps``. ``app.py`` maps subjects to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from uuid import UUID, uuid5

import structlog
from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

from routewise.contracts.budget import CostRestrictions, GetBudgetStatus, ReleaseBudget, Reservation, ReserveBudget
from routewise.contracts.catalog import Catalog, CatalogModel, default_catalog
from routewise.contracts.cost import CostEstimate, EstimateCost, ModelEstimate
from routewise.contracts.errors import RemoteError, RoutewiseError
from routewise.contracts.events import (
    CandidateScore,
    FeedbackRecorded,
    ModelSelected,
    RejectionReason,
    Scope,
    TaskArrived,
    TaskRejected,
    Tier,
    fixed_point,
    utcnow,
)
from routewise.contracts.performance import PerformanceSnapshot
from routewise.contracts.routing import (
    Decision,
    DeleteTierPreferences,
    GetDecision,
    GetTierPreferences,
    ListPolicies,
    PolicyList,
    RoutingPolicy,
    RoutingPreview,
    SetPolicy,
    SetTierPreferences,
    TierPreferences,
    TierPreferencesReply,
)
from routewise.contracts.vocabulary import ErrorCode, is_permanent
from routewise.runtime.bus import still_working, stored_at
from routewise.runtime.catalog import CatalogView, LiveCatalog
from routewise.runtime.db import Connection
from routewise.runtime.service import Deps, Runtime, UnitOfWork
from routewise.services.selector import repository as repo
from routewise.services.selector.domain import (
    Candidate,
    Features,
    Limits,
    Pick,
    Policy,
    Screened,
    cheaper_candidates,
    decide,
    fallback_chain,
    features,
    screen,
    target_tier,
    validate,
)
from routewise.services.selector.learner import (
    TextModel,
    base_quality,
    confidence,
    learn,
    logit,
    observed,
    prior_quality,
    sigmoid,
    text_features,
)
from routewise.services.selector.ports import Budgets, BusBudgets, LocalQuotes, Quotes
from routewise.services.selector.snapshots import BucketFeed, SnapshotFeed, Snapshots

log = structlog.get_logger(__name__)
TRACER = "routewise.selector"
LEARNER_REFRESH_S = 1.0
"""How stale a replica's text learner may be (sooner when this replica learnt something)."""
SNAPSHOT_REWATCH_S = 1.0
"""How long after a broken watch of the performance snapshots it is started again."""

# A budget's refusal as the reason a task is rejected.
_REJECTION = {
    "budget_exhausted": RejectionReason.budget_exhausted,
    "approval_required": RejectionReason.approval_required,
    "over_request_cap": RejectionReason.over_request_cap,
    "model_restricted": RejectionReason.no_model_within_constraints,
    "already_settled": RejectionReason.invalid_request,
}
_FINAL_REFUSALS = frozenset({"approval_required", "already_settled"})
"""Refusals that a cheaper model would get too."""


class TaskLocks:
    """One decision per task at a time within a replica (its consumer runs many at once)."""

    def __init__(self) -> None:
        self._locks: dict[UUID, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def one_at_a_time(self, task_id: UUID) -> AsyncIterator[None]:
        lock, users = self._locks.get(task_id, (asyncio.Lock(), 0))
        self._locks[task_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[task_id]
            if users == 1:
                del self._locks[task_id]
            else:
                self._locks[task_id] = (lock, users - 1)


class RoutingSettings:
    """The routing policies and workspace preferences decisions read, held in memory: a decision
    asks the database only for what it has not read since the last change. Every change (on any
    replica) is told to every replica (``routing_settings_changed``), which forgets what it holds;
    a read that raced a change is not kept; and every ``ROUTING_SETTINGS_REFRESH_S`` it forgets
    anyway, for a notice it missed. At most ``MOST`` entries each (then it starts over)."""

    MOST = 10_000

    def __init__(self) -> None:
        self.policies: dict[tuple[str, str | None], Policy | str] = {}
        self.prefs: dict[str, TierPreferences | None] = {}
        self.generation = 0

    def forget(self) -> None:
        self.policies.clear()
        self.prefs.clear()
        self.generation += 1

    async def read(
        self, conn: Connection, task: TaskArrived, workspace: str | None
    ) -> tuple[Policy | str, TierPreferences | None]:
        """The task's policy (or why it has none) and its workspace's stored preferences (None:
        it has none)."""
        key, where = (task.task_type, task.policy), workspace or ""
        generation = self.generation
        policy = self.policies.get(key)
        if policy is None:
            try:
                policy = await repo.policy_for(conn, task.task_type, task.policy)
            except RoutewiseError as exc:
                policy = exc.message
        if where in self.prefs:
            prefs = self.prefs[where]
        else:
            prefs = await repo.preferences(conn, workspace)
        if generation == self.generation:  # nothing changed while it read: keep it
            if len(self.policies) >= self.MOST or len(self.prefs) >= self.MOST:
                self.forget()
            self.policies[key], self.prefs[where] = policy, prefs
        return policy, prefs


@dataclass(kw_only=True)
class SelectorDeps(Deps):
    """The selector's long-lived state: the catalog, the live performance snapshots, this
    replica's copy of the text learner, and the ports to the services a decision asks."""

    quotes: Quotes
    budgets: Budgets
    snapshot_feed: SnapshotFeed
    profile_feed: SnapshotFeed | None = None
    """cost-predictor's output profiles (the KV bucket ``quotes`` mirrors, when it is ``LocalQuotes``)."""
    catalog: Catalog = field(default_factory=default_catalog)
    """The live catalog (cost-predictor's publication, kept by ``watch_catalog``)."""
    unpriced: Mapping[str, str] = field(default_factory=dict)
    """Catalog models without a price, and why: skipped until priced."""
    catalog_revision: int = 0
    """The live catalog's revision, sent with each estimate so cost-predictor prices with it too."""
    live_catalog: LiveCatalog | None = None
    tracer: Tracer = field(default_factory=lambda: trace.get_tracer(TRACER))
    snapshots: Snapshots = field(default_factory=Snapshots)
    in_progress: TaskLocks = field(default_factory=TaskLocks)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    announce_settings_changed: Callable[[], Awaitable[None]] | None = None
    """Tells every replica (this one too) that a policy or preferences changed."""
    text_models: dict[str, TextModel] = field(default_factory=dict)
    learner_changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once this replica's feedback is committed: the learner refresh runs at once."""
    watch_now: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at start-up: the first watch of the snapshots begins with the service."""


async def build(rt: Runtime) -> SelectorDeps:
    """The ports over the bus, the live catalog and the snapshots' bucket (each created if its
    writer has not yet), the learner as stored; and a warning for each policy naming models the
    catalog lacks."""
    subjects, timeout = rt.subjects, rt.settings.request_timeout
    live = await LiveCatalog.open(rt.broker, rt.settings)
    quotes = LocalQuotes(live.view)
    profile_feed = await BucketFeed.open(rt.broker, subjects.profiles_bucket)
    deps = SelectorDeps(
        **rt.base_deps(),
        quotes=quotes,
        budgets=BusBudgets(rt.broker, subjects, timeout),
        snapshot_feed=await BucketFeed.open(rt.broker, subjects.performance_bucket),
        profile_feed=profile_feed,
        tracer=rt.tracer_provider.get_tracer(TRACER),
        live_catalog=live,
        announce_settings_changed=lambda: rt.broker.publish(b"", subjects.routing_settings_changed),
    )
    live.on_change(quotes.use)  # the models and prices as cost-predictor publishes them...
    live.on_change(lambda view: use_catalog(deps, view))  # ...both changed between two awaits
    await deps.snapshots.load(deps.snapshot_feed)  # no decision before the models' health is known
    await quotes.load(profile_feed)  # nor before the output tokens learnt so far
    deps.watch_now.set()
    await refresh_learner(deps)
    await warn_unknown_models(deps)
    return deps


def use_catalog(deps: SelectorDeps, view: CatalogView) -> None:
    """Route with this revision of the catalog from now on (one assignment each, between awaits)."""
    deps.catalog, deps.unpriced, deps.catalog_revision = view.catalog, view.unpriced, view.revision


async def warn_unknown_models(deps: SelectorDeps) -> None:
    async with deps.pool.acquire() as conn:
        policies = await repo.list_policies(conn)
    for policy in policies:
        unknown = [m for m in policy.models if deps.catalog.get(m) is None]
        if unknown:
            log.warning("policy names models the catalog lacks; they are skipped", policy=policy.name, models=unknown)


# --- the decision ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Everything decided before any budget is touched (all a preview shows)."""

    task: TaskArrived
    policy: Policy
    prefs: TierPreferences
    tier: Tier
    feats: Features
    text: list[int]
    estimates: dict[str, ModelEstimate]
    limits: Limits
    screened: Screened
    pick: Pick
    started: float
    price_table: int
    """The catalog revision the estimates were priced with."""


@dataclass(frozen=True)
class Refused:
    """A task rejected before any budget was asked, with what was known by then (for previews)."""

    rejection: TaskRejected
    policy: str | None = None
    tier: Tier | None = None
    excluded: dict[str, str] = field(default_factory=dict)


def rejection(task: TaskArrived, reason: RejectionReason, detail: str, budget_id: UUID | None = None) -> TaskRejected:
    return TaskRejected(
        task_id=task.task_id,
        scope=task.scope,
        task_type=task.task_type,
        reason=reason,
        detail=detail,
        budget_id=budget_id,
    )


def base_estimate(
    model: CatalogModel, snap: PerformanceSnapshot | None, complexity: float, pattern: str, task_type: str
) -> tuple[float, int]:
    """Quality expected from the prior and performance-tracker's statistics, and their sample count."""
    mean, samples = observed((snap.by_pattern.get(pattern), snap.by_task_type.get(task_type))) if snap else (None, 0)
    return base_quality(prior_quality(model.quality_prior, complexity), mean, samples), samples


def predict(
    deps: SelectorDeps, model: CatalogModel, feats: Features, task_type: str, text: list[int]
) -> tuple[float, float]:
    """(predicted quality, confidence) of ``model`` for this prompt."""
    snap = deps.snapshots.get(model.id)
    quality, samples = base_estimate(model, snap, feats.complexity, feats.pattern, task_type)
    learnt = deps.text_models.get(model.id)
    if learnt is not None and learnt.examples:
        quality = sigmoid(logit(quality) + learnt.adjustment(text))
    day = snap.windows.get("24h") if snap else None
    if day is not None and day.success_rate is not None and day.requests >= 10:
        quality *= day.success_rate  # a failed call delivers nothing
    return round(quality, 4), confidence(samples)


def predictions(
    deps: SelectorDeps, models: list[CatalogModel], feats: Features, task_type: str, text: list[int]
) -> tuple[dict[str, tuple[float, float]], str | None]:
    """Each model's (quality, confidence), and why the learner could not say (priors only then)."""
    try:
        return {m.id: predict(deps, m, feats, task_type, text) for m in models}, None
    except Exception as exc:  # the learner must never stop a decision
        error = f"{type(exc).__name__}: {exc}"
        log.warning("quality prediction failed; priors only", error=error)
        return {m.id: (round(prior_quality(m.quality_prior, feats.complexity), 4), 0.0) for m in models}, error


async def settings_for(deps: SelectorDeps, conn: Connection, task: TaskArrived) -> tuple[Policy | str, TierPreferences]:
    """The task's policy (or why it has none) and its workspace's preferences."""
    scope = task.scope
    workspace = f"{scope.org_id}/{scope.workspace_id}" if scope.workspace_id else None
    policy, stored = await deps.routing.read(conn, task, workspace)
    prefs = stored or TierPreferences(workspace_id=workspace or f"{scope.org_id}/default")
    if isinstance(policy, str):
        return policy, prefs
    if task.constraints.allowed_models:  # the caller named its models: they are the candidates
        policy = replace(policy, models=tuple(dict.fromkeys(task.constraints.allowed_models)))
    return policy, prefs


ROUTING_SETTINGS_REFRESH_S = 30.0
"""A change whose notice a replica missed (it was reconnecting) reaches its decisions within this."""


async def settings_changed(deps: SelectorDeps) -> None:
    """A policy or preferences changed (here or on another replica), or it is time to read them
    again anyway (a notice may be missed): forget what is held."""
    deps.routing.forget()


def output_cap(task: TaskArrived, policy: Policy) -> int | None:
    """The most output tokens the call may produce: the caller's cap within the policy's."""
    caps = [cap for cap in (task.constraints.max_output_tokens, policy.max_tokens) if cap is not None]
    return min(caps) if caps else None


async def quote(
    deps: SelectorDeps,
    task: TaskArrived,
    policy: Policy,
    prefs: TierPreferences,
    models: list[CatalogModel],
) -> CostEstimate | Refused:
    """The policy's models priced for this task, or the task refused when it cannot be priced. A
    quote that could not be made for a reason that is not permanent raises (the task waits)."""
    worst_case = task.constraints.max_output_tokens is not None  # the hold covers the call's worst case
    cap = output_cap(task, policy)
    ask = EstimateCost(
        prompt=task.prompt,
        messages=task.messages,
        models=[m.id for m in models],
        task_type=task.task_type,
        expected_output_tokens=cap if worst_case else None,
        max_output_tokens=cap,
        cached_prefix=prefs.cache_aware_routing and task.messages is not None and not worst_case,
    )
    try:
        return await deps.quotes.estimate(ask)
    except RemoteError as exc:
        if not is_permanent(exc.code):
            raise
        detail = f"{exc.code}: {exc.message}"
        return Refused(rejection(task, RejectionReason.no_model_within_constraints, detail), policy.name)


async def plan(
    deps: SelectorDeps,
    task: TaskArrived,
    policy: Policy | str,
    prefs: TierPreferences,
    *,
    started: float,
    restrictions: CostRestrictions | None = None,
) -> Plan | Refused:
    """Everything but the budget, from ``started`` (perf_counter) on."""
    if isinstance(policy, str):
        return Refused(rejection(task, RejectionReason.no_model_within_constraints, policy))
    if deps.live_catalog is not None and any(deps.catalog.get(m) is None for m in policy.models):
        deps.live_catalog.refresh_soon()  # registered a moment ago, before the watch delivered it? (no wait here)
    catalog, unpriced = deps.catalog, deps.unpriced
    in_catalog = [m for m in (catalog.get(i) for i in policy.models) if m is not None]
    models = [m for m in in_catalog if m.id not in unpriced]  # a model without a price is never free
    if not models:
        detail = f"no model of policy {policy.name} is in the catalog"
        if in_catalog:
            why = "; ".join(f"{m.id}: not routable, {unpriced[m.id]}" for m in in_catalog)
            detail = f"no model of policy {policy.name} has a price ({why})"
        return Refused(rejection(task, RejectionReason.no_model_within_constraints, detail), policy.name)
    revision = deps.catalog_revision  # the prices quote() uses are of this revision (set together)
    quoted = await quote(deps, task, policy, prefs, models)
    if isinstance(quoted, Refused):
        return quoted
    estimates = {e.model: e for e in quoted.estimates}
    prompt = task.text()  # messages joined once, for both the features and the learner
    feats = features(prompt, max(e.input_tokens for e in quoted.estimates))
    bias = task.quality_bias if task.quality_bias is not None else prefs.quality_bias
    tier = target_tier(feats, prefs, bias)
    text = text_features(prompt, feats.pattern, task.task_type)
    predicted, learning_error = predictions(deps, models, feats, task.task_type, text)
    snapshots = deps.snapshots
    limits = Limits(
        policy, prefs, task.constraints, snapshots.demoted, snapshots.latency_p95_ms, restrictions=restrictions
    )
    screened = screen(catalog, limits, estimates, predicted, unroutable=unpriced)
    if not screened.candidates:
        why = "; ".join(f"{m}: {reason}" for m, reason in screened.excluded.items())
        refused = rejection(task, RejectionReason.no_model_within_constraints, f"policy {policy.name}: {why}")
        return Refused(refused, policy.name, tier, screened.excluded)
    strategy = task.strategy or ("hybrid" if task.auto_route else "complexity")
    pick = decide(strategy, screened.candidates, tier, feats, bias, learning_error, escalate=prefs.auto_escalation)
    return Plan(task, policy, prefs, tier, feats, text, estimates, limits, screened, pick, started, revision)


def selection(
    p: Plan,
    chosen: Candidate,
    reservation: Reservation | None,
    budget_note: str,
    limits: Limits,
    refused: frozenset[str] = frozenset(),
) -> ModelSelected:
    """The decision for ``chosen`` (held by ``reservation``, or None in a preview)."""
    baseline = p.policy.baseline if p.policy.baseline in p.estimates else next(iter(p.estimates))
    reasoning = "; ".join(part for part in (p.pick.reasoning, p.screened.note, budget_note) if part)
    return ModelSelected(
        task_id=p.task.task_id,
        scope=p.task.scope,
        task_type=p.task.task_type,
        model=chosen.model.id,
        provider=chosen.model.provider,
        tier=chosen.model.tier,
        fallback_chain=fallback_chain(p.screened.candidates, chosen, limits, enabled=p.prefs.fallback, refused=refused),
        policy=p.policy.name,
        estimated_input_tokens=chosen.estimate.input_tokens,
        estimated_output_tokens=chosen.estimate.output_tokens_p50,
        max_output_tokens=output_cap(p.task, p.policy),
        estimated_cost_usd=chosen.cost,
        baseline_model=baseline,
        baseline_cost_usd=p.estimates[baseline].cost_usd_p50,
        strategy=p.pick.strategy,
        fallback_reason=p.pick.fallback_reason,
        confidence=chosen.confidence,
        complexity=p.feats.complexity,
        pattern=p.feats.pattern,
        reasoning=f"policy {p.policy.name}: {reasoning}",
        experimental=p.pick.experimental,
        candidates=[
            CandidateScore(
                model=c.model.id,
                provider=c.model.provider,
                tier=c.model.tier,
                predicted_quality=c.quality,
                confidence=c.confidence,
                estimated_cost_usd=c.cost,
                output_tokens_p50=c.estimate.output_tokens_p50,
                output_tokens_p90=c.estimate.output_tokens_p90,
            )
            for c in sorted(p.screened.candidates, key=lambda c: c.cost)
        ],
        reservation_id=reservation.reservation_id if reservation else None,
        decision_latency_ms=round((time.perf_counter() - p.started) * 1000, 3),
        price_table=p.price_table,
    )


async def hold(deps: SelectorDeps, task: TaskArrived, candidate: Candidate) -> Reservation:
    """Reserve the candidate's p90 on the task's budgets. A hold left by an earlier attempt
    at this task (a redelivery that re-planned) is released first when it is for another amount."""
    ask = ReserveBudget(
        task_id=task.task_id,
        scope=task.scope,
        amount_usd=candidate.estimate.cost_usd_p90,
        model=candidate.model.id,
        tier=candidate.model.tier,
    )
    answer = await deps.budgets.reserve(ask)
    if answer.admitted and answer.amount_usd != ask.amount_usd:
        assert answer.reservation_id is not None  # an admitted reservation is named
        await deps.budgets.release(
            ReleaseBudget(task_id=task.task_id, reservation_id=answer.reservation_id, reason="re-planned after a retry")
        )
        answer = await deps.budgets.reserve(ask)
    return answer


async def reserve(deps: SelectorDeps, p: Plan) -> ModelSelected | TaskRejected:
    """Hold the chosen model's p90 on the task's budgets; on a refusal, the next cheaper
    candidate that the restrictions in force allow; if none, the task is rejected. Each model
    is validated against the limits as they are at that moment before it is reserved."""
    notes: list[str] = []
    refusals: list[tuple[Candidate, Reservation]] = []
    limits = p.limits
    queue = [p.pick.candidate]
    while queue:
        candidate = queue.pop(0)
        limits = replace(limits, demoted=deps.snapshots.demoted, latency_p95_ms=deps.snapshots.latency_p95_ms)
        try:
            validate(candidate, deps.catalog, limits)
        except ValueError as exc:
            notes.append(f"{exc}; not reserved")
            queue = queue or cheaper_candidates(p.screened.candidates, candidate, limits)
            continue
        answer = await hold(deps, p.task, candidate)
        if answer.admitted:
            if refusals:
                notes.append("budget: " + "; ".join(f"{c.model.id} refused ({r.detail})" for c, r in refusals))
                notes.append(f"downgraded to {candidate.model.id} at ${fixed_point(candidate.cost)}")
            refused = frozenset(c.model.id for c, _ in refusals)
            return selection(p, candidate, answer, "; ".join(notes), limits, refused)
        refusals.append((candidate, answer))
        if answer.reason in _FINAL_REFUSALS:
            break
        limits = replace(limits, restrictions=answer.restrictions)
        queue = cheaper_candidates(p.screened.candidates, candidate, limits)
    if not refusals:
        return rejection(p.task, RejectionReason.no_model_within_constraints, "; ".join(notes))
    last = refusals[-1][1]
    return rejection(
        p.task,
        _REJECTION.get(last.reason or "", RejectionReason.no_model_within_constraints),
        f"{last.detail} (tried {', '.join(c.model.id for c, _ in refusals)})",
        last.budget_id,
    )


# --- events ---------------------------------------------------------------------------------


TASK_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")
"""What a task type may be (the contract's pattern and bound)."""

INVALID_TASK_IDS = UUID("5f0c1e9a-7b7d-4d3e-8a51-2f6e0c4b9d21")
"""Names the ids of the TaskRejected answering an invalid TaskArrived (the same for a redelivery)."""


async def reject_invalid_task(raw: bytes, problem: str, deps: SelectorDeps) -> None:
    """A TaskArrived that is not valid gets an answer, not silence: TaskRejected ``invalid_request``
    with why, when its task id and scope can be read from it (else only the dead letter says it)."""
    try:
        payload = json.loads(raw)
        task_id = UUID(str(payload["task_id"]))
        scope = Scope.model_validate(payload["scope"])
    except Exception:  # not even the sender can be read: nobody to answer
        return
    task_type = payload.get("task_type")
    rejected = TaskRejected(
        event_id=uuid5(INVALID_TASK_IDS, f"{task_id}:{hashlib.sha256(raw).hexdigest()}"),
        task_id=task_id,
        scope=scope,
        task_type=task_type if isinstance(task_type, str) and TASK_TYPE.fullmatch(task_type) else "normal",
        reason=RejectionReason.invalid_request,
        detail=f"not a valid TaskArrived: {problem}"[:2_000],
    )
    async with deps.transaction() as uow:
        await uow.publish(deps.subjects.event(rejected), rejected)
    log.info("invalid task rejected", task_id=str(task_id), problem=problem[:500])


async def decide_task_arrived(task: TaskArrived, deps: SelectorDeps) -> None:
    """Decide a task: its model held on its budgets and ModelSelected published, or TaskRejected.
    Claims the event itself (after the budget calls, which cannot be in its transaction)."""
    started = time.perf_counter()
    async with deps.in_progress.one_at_a_time(task.task_id):  # two events of one task: one after the other
        with deps.tracer.start_as_current_span("routewise.decide") as span:
            span.set_attribute("routewise.task_id", str(task.task_id))
            outcome = await decide_task(deps, task, started)
            if outcome is not None:
                describe(span, outcome)


async def decide_task(deps: SelectorDeps, task: TaskArrived, started: float) -> ModelSelected | TaskRejected | None:
    """The task's outcome, recorded and published in one transaction with the event's inbox
    claim; None when this event was applied already or the task is already selected."""
    async with deps.pool.acquire() as conn:
        seen = await repo.seen(conn, task.event_id, task.task_id)
        if seen.applied:
            return None  # this very event was applied: deciding again would hold budget for nothing
        if seen.previous == "selected":
            log.info("task already decided; ignoring repeat", task_id=str(task.task_id))
            return None  # (a rejected task may be submitted again, e.g. after an approval)
        policy, prefs = await settings_for(deps, conn, task)
    outcome, learning = await decide_in_time(deps, task, policy, prefs, started)
    async with deps.transaction() as uow:
        if not await deps.claim(uow.conn, task):
            return None
        if await repo.record_decision(uow.conn, task, outcome, learning):
            await uow.publish(deps.subjects.event(outcome), outcome)
    return outcome


Learning = tuple[str, float, list[int]]
"""What the learner keeps of a decided task: its pattern, complexity and text features."""

WAIT_FIRST_S, WAIT_MAX_S = 0.25, 5.0
"""How often a waiting task asks again: from a quarter second, doubling, up to five."""


async def decide_in_time(
    deps: SelectorDeps, task: TaskArrived, policy: Policy | str, prefs: TierPreferences, started: float
) -> tuple[ModelSelected | TaskRejected, Learning | None]:
    """Plan and reserve. A service the decision needs that does not answer (any error but a
    permanent one) does not spend the message's deliveries: the task waits and asks again, until
    ``decision_deadline`` after it reached the bus, then is rejected as ``unavailable``."""
    deadline = stored_at() + timedelta(seconds=deps.settings.decision_deadline)
    wait = WAIT_FIRST_S
    while True:
        try:
            planned = await plan(deps, task, policy, prefs, started=started)
            if isinstance(planned, Refused):
                return planned.rejection, None
            return await reserve(deps, planned), (planned.feats.pattern, planned.feats.complexity, planned.text)
        except RemoteError as exc:
            if is_permanent(exc.code):
                raise
            left = (deadline - utcnow()).total_seconds()
            if left <= 0:
                limit = deps.settings.decision_deadline
                detail = f"{exc.message} ({exc.code}); gave up at the decision deadline ({limit:g} s)"
                log.warning("task rejected: a service it needs did not answer in time", error=exc.message)
                return rejection(task, RejectionReason.unavailable, detail), None
            log.warning(
                "a service the decision needs did not answer; the task waits", error=exc.message, retry_in_s=wait
            )
        await still_working()
        await asyncio.sleep(min(wait, left))
        wait = min(wait * 2, WAIT_MAX_S)


def describe(span: Span, outcome: ModelSelected | TaskRejected) -> None:
    """The outcome on the decision's span (and in the log at DEBUG)."""
    if isinstance(outcome, TaskRejected):
        span.set_attribute("routewise.rejection_reason", outcome.reason.value)
        log.debug("task rejected", reason=outcome.reason.value, detail=outcome.detail)  # counted in metrics
        return
    span.set_attribute("routewise.model", outcome.model)
    span.set_attribute("routewise.strategy", outcome.strategy)
    span.set_attribute("routewise.confidence", outcome.confidence)
    span.set_attribute("routewise.estimated_cost_usd", str(outcome.estimated_cost_usd))
    span.set_attribute("routewise.candidates", [c.model for c in outcome.candidates])
    span.set_attribute("routewise.candidate_count", len(outcome.candidates))
    log.debug(  # a line per decision only when asked for (ROUTEWISE_LOG_LEVEL=DEBUG); metrics counts them
        "model selected",
        model=outcome.model,
        tier=outcome.tier.value,
        strategy=outcome.strategy,
        cost=str(outcome.estimated_cost_usd),
    )


async def learn_feedback(event: FeedbackRecorded, uow: UnitOfWork, deps: SelectorDeps) -> None:
    """Teach the model's text learner how good its answer to this prompt was."""
    task = await repo.task_features(uow.conn, event.task_id)
    model = deps.catalog.get(event.model)
    if task is None or model is None:
        log.info("feedback not learnt: task or model unknown to the selector", task_id=str(event.task_id))
        return
    try:
        snap = deps.snapshots.get(model.id)
    except ValueError:
        snap = None  # unreadable snapshot: learn over the prior
    base, _ = base_estimate(model, snap, task["complexity"], task["pattern"], task["task_type"])
    current = await repo.lock_text_model(uow.conn, model.id)
    known = await repo.weights_of(uow.conn, model.id, task["features"])
    update = learn(current.bias, current.bias_g, known, task["features"], logit(base), event.quality)
    await repo.save_update(uow.conn, model.id, current.version + 1, update)
    uow.after_commit(deps.learner_changed.set)


# --- requests -------------------------------------------------------------------------------


async def preview(task: TaskArrived, deps: SelectorDeps) -> RoutingPreview:
    """The decision without a reservation: the budgets' restrictions in force are asked for
    and applied instead (when budget-enforcer answers)."""
    started = time.perf_counter()
    async with deps.pool.acquire() as conn:
        policy, prefs = await settings_for(deps, conn, task)
    restrictions, budget_note = await restrictions_in_force(deps, task)
    planned = await plan(deps, task, policy, prefs, started=started, restrictions=restrictions)
    if isinstance(planned, Refused):
        return RoutingPreview(
            selected=None,
            rejected=planned.rejection,
            policy=planned.policy,
            target_tier=planned.tier,
            excluded=planned.excluded,
        )
    return RoutingPreview(
        selected=selection(planned, planned.pick.candidate, None, budget_note, planned.limits),
        rejected=None,
        policy=planned.policy.name,
        target_tier=planned.tier,
        excluded=planned.screened.excluded,
    )


async def restrictions_in_force(deps: SelectorDeps, task: TaskArrived) -> tuple[CostRestrictions | None, str]:
    """The restrictions the task's budgets impose now, and the preview's note about them."""
    note = "preview: no budget reserved"
    try:
        status = await deps.budgets.status(GetBudgetStatus(scope=task.scope))
    except RemoteError as exc:
        return None, f"{note}; budgets not consulted ({exc.code})"
    if status.remaining_usd is not None:
        note += f" (${fixed_point(status.remaining_usd)} left on the tightest budget)"
    return status.cost_restrictions, note


async def get_decision(req: GetDecision, deps: SelectorDeps) -> Decision:
    async with deps.pool.acquire() as conn:
        row = await repo.decision(conn, req.task_id)
    if row is None:
        raise RoutewiseError(f"no decision is known for task {req.task_id}", code=ErrorCode.not_found)
    return Decision(
        task_id=row["task_id"],
        status=row["status"],
        scope=row["scope"],
        task_type=row["task_type"],
        model=row["model"],
        provider=row["provider"],
        tier=row["tier"],
        estimated_cost_usd=row["estimated_cost_usd"],
        reason=row["reason"],
        decided_at=row["decided_at"],
        trace_context=row["trace_context"],
    )


async def list_policies(req: ListPolicies, deps: SelectorDeps) -> PolicyList:
    async with deps.pool.acquire() as conn:
        return PolicyList(policies=await repo.list_policies(conn), default_policy=repo.DEFAULT_POLICY)


async def set_policy(req: SetPolicy, deps: SelectorDeps) -> RoutingPolicy:
    catalog = deps.catalog
    unknown = [m for m in req.models if catalog.get(m) is None]
    if unknown:
        raise RoutewiseError(
            f"not in the model catalog: {', '.join(unknown)} (known: {', '.join(m.id for m in catalog.models)})",
            code=ErrorCode.unknown_model,
        )
    async with deps.transaction() as uow:
        saved = await repo.set_policy(uow.conn, req)
    await changed(deps)
    log.info("routing policy set", policy=req.name, models=req.models, by=req.actor)
    return saved


async def changed(deps: SelectorDeps) -> None:
    """After a committed change of a policy or preferences: this replica forgets what it held at
    once, and every replica is told (a notice lost is made good by the next change)."""
    deps.routing.forget()
    if deps.announce_settings_changed is not None:
        try:
            await deps.announce_settings_changed()
        except Exception as exc:
            log.warning("other replicas were not told of the change", error=repr(exc)[:300])


async def get_preferences(req: GetTierPreferences, deps: SelectorDeps) -> TierPreferencesReply:
    async with deps.pool.acquire() as conn:
        stored = await repo.preferences(conn, req.workspace_id)
    return TierPreferencesReply(
        preferences=stored or TierPreferences(workspace_id=req.workspace_id), stored=stored is not None
    )


async def set_preferences(req: SetTierPreferences, deps: SelectorDeps) -> TierPreferencesReply:
    providers = {m.provider for m in deps.catalog.models}
    unknown = [p for p in req.preferences.preferred_providers if p not in providers]
    if unknown:
        raise RoutewiseError(
            f"no catalog model is served by {', '.join(unknown)} (providers: {', '.join(sorted(providers))})",
            code=ErrorCode.unknown_provider,
        )
    async with deps.transaction() as uow:
        stored = await repo.set_preferences(uow.conn, req.preferences, req.actor)
    await changed(deps)
    log.info("tier preferences set", workspace=req.preferences.workspace_id, by=req.actor)
    return TierPreferencesReply(preferences=stored, stored=True)


async def delete_preferences(req: DeleteTierPreferences, deps: SelectorDeps) -> TierPreferencesReply:
    async with deps.transaction() as uow:
        if not await repo.delete_preferences(uow.conn, req.workspace_id):
            raise RoutewiseError(f"workspace {req.workspace_id} has no stored preferences", code=ErrorCode.not_found)
    await changed(deps)
    log.info("tier preferences deleted", workspace=req.workspace_id, by=req.actor)
    return TierPreferencesReply(preferences=TierPreferences(workspace_id=req.workspace_id), stored=False)


# --- jobs -----------------------------------------------------------------------------------


async def refresh_learner(deps: SelectorDeps) -> None:
    """Load what changed in every model's text learner since this replica last looked."""
    async with deps.pool.acquire() as conn:
        for model, (bias, examples, version) in (await repo.text_model_versions(conn)).items():
            known = deps.text_models.get(model) or TextModel()
            if known.version == version:
                continue
            for feature, weight in await repo.weights_since(conn, model, known.version):
                known.weights[feature] = weight
            known.bias, known.examples, known.version = bias, examples, version
            deps.text_models[model] = known


async def watch_snapshots(deps: SelectorDeps) -> None:
    """Keep the performance snapshots current: every put to performance-tracker's bucket, from
    its content on, for as long as the watch lasts (a broken one is started again)."""
    await deps.snapshots.follow(deps.snapshot_feed)


async def watch_profiles(deps: SelectorDeps) -> None:
    """Keep the output profiles the decisions are estimated with current, the same way."""
    if deps.profile_feed is not None and isinstance(deps.quotes, LocalQuotes):
        await deps.quotes.follow(deps.profile_feed)
