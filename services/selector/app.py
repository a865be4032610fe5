"""selector's bus adapters: TaskArrived → ModelSelected | TaskRejected (through the outbox)."""

from __future__ import annotations

import time
from pathlib import Path

import structlog
from faststream.nats import NatsRouter

from services.selector.domain import cheaper_candidates, choose, features, tier_for
from shared.bus import consume, reply, request
from shared.catalog import CatalogModel, default_catalog
from shared.db import claim, unit_of_work
from shared.errors import RemoteError, RoutewiseError
from shared.events import ModelSelected, RejectionReason, TaskArrived, TaskRejected
from shared.outbox import enqueue
from shared.requests import CostEstimate, Decision, EstimateCost, GetDecision, ModelEstimate, Reservation, ReserveBudget
from shared.service import Runtime, ServiceSpec

NAME = "selector"
log = structlog.get_logger(__name__)

# A budget's refusal as the reason a task is rejected.
_REJECTION = {
    "budget_exhausted": RejectionReason.budget_exhausted,
    "approval_required": RejectionReason.approval_required,
    "over_request_cap": RejectionReason.over_request_cap,
    "model_restricted": RejectionReason.no_model_within_constraints,
}

# Errors of cost.estimate that mean "this task cannot be priced", not "try again later".
_UNPRICEABLE = {"unknown_model", "unknown_price", "context_window_exceeded", "invalid_request"}


def register(router: NatsRouter, rt: Runtime) -> None:
    catalog = default_catalog()
    subjects = rt.subjects
    tracer = rt.tracer_provider.get_tracer("routewise.selector")

    async def decide(task: TaskArrived) -> ModelSelected | TaskRejected:
        started = time.perf_counter()
        models = [m.id for m in catalog.models]
        try:
            quote = await request(
                rt.broker,
                subjects.cost_estimate,
                EstimateCost(
                    prompt=task.prompt,
                    messages=task.messages,
                    models=models,
                    task_type=task.task_type,
                    task_id=task.task_id,
                ),
                CostEstimate,
                timeout=rt.settings.request_timeout,
            )
        except RemoteError as exc:
            if exc.code not in _UNPRICEABLE:
                raise  # cost-predictor unavailable: retry with backoff
            return TaskRejected(
                task_id=task.task_id,
                scope=task.scope,
                task_type=task.task_type,
                reason=RejectionReason.no_model_within_constraints,
                detail=f"{exc.code}: {exc.message}",
            )
        estimates = {e.model: e for e in quote.estimates}
        feats = features(task.text(), max(e.input_tokens for e in quote.estimates))
        tier = tier_for(feats.complexity)
        choice = choose(catalog, tier, estimates, feats)
        model, reservation, refusals = await reserve(task, choice.model, estimates)
        if model is None or reservation is None:
            last = refusals[-1]
            tried = ", ".join(m for m, _ in refusals)
            return TaskRejected(
                task_id=task.task_id,
                scope=task.scope,
                task_type=task.task_type,
                reason=_REJECTION.get(last[1].reason or "", RejectionReason.no_model_within_constraints),
                detail=f"{last[1].detail} (tried {tried})",
            )
        estimate = estimates[model.id]
        reasoning = choice.reasoning
        if refusals:
            reasoning += "; budget: " + "; ".join(f"{m} refused ({r.detail})" for m, r in refusals)
            reasoning += f"; downgraded to {model.id} at ${estimate.cost_usd_p50}"
        baseline = estimates[catalog.baseline]
        return ModelSelected(
            task_id=task.task_id,
            scope=task.scope,
            task_type=task.task_type,
            model=model.id,
            provider=model.provider,
            tier=model.tier,
            fallback_chain=[m for m in choice.fallback_chain if m != model.id],
            estimated_input_tokens=estimate.input_tokens,
            estimated_output_tokens=estimate.output_tokens_p50,
            estimated_cost_usd=estimate.cost_usd_p50,
            baseline_model=catalog.baseline,
            baseline_cost_usd=baseline.cost_usd_p50,
            strategy="complexity",
            confidence=1.0,
            complexity=feats.complexity,
            pattern=feats.pattern,
            reasoning=reasoning,
            reservation_id=reservation.reservation_id,
            decision_latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    async def reserve(
        task: TaskArrived, first: CatalogModel, estimates: dict[str, ModelEstimate]
    ) -> tuple[CatalogModel | None, Reservation | None, list[tuple[str, Reservation]]]:
        """Hold the p90 estimate on the task's budgets; on a refusal, the next cheaper model that
        the restrictions in force allow. Returns the model, its reservation and the refusals."""
        refusals: list[tuple[str, Reservation]] = []
        queue = [first]
        while queue:
            model = queue.pop(0)
            answer = await request(
                rt.broker,
                subjects.budget_reserve,
                ReserveBudget(
                    task_id=task.task_id,
                    scope=task.scope,
                    amount_usd=estimates[model.id].cost_usd_p90,
                    model=model.id,
                    tier=model.tier,
                ),
                Reservation,
                timeout=rt.settings.request_timeout,
            )
            if answer.admitted:
                return model, answer, refusals
            refusals.append((model.id, answer))
            if answer.reason == "approval_required":
                break  # a cheaper model needs the approval too
            r = answer.restrictions
            queue = cheaper_candidates(
                catalog,
                estimates,
                model,
                max_tier=r.max_tier,
                restricted=frozenset(r.restricted_models),
                max_cost=r.max_cost_per_request,
            )
        return None, None, refusals

    async def on_task_arrived(task: TaskArrived) -> None:
        with tracer.start_as_current_span("routewise.decide") as span:
            span.set_attribute("routewise.task_id", str(task.task_id))
            async with rt.pool.acquire() as conn:
                if await conn.fetchval("SELECT 1 FROM inbox WHERE event_id = $1", task.event_id):
                    return  # this very event was applied: deciding again would hold budget for nothing
                previous = await conn.fetchval("SELECT status FROM decisions WHERE task_id = $1", task.task_id)
            if previous == "selected":
                log.info("task already decided; ignoring repeat", task_id=str(task.task_id))
                return  # (a rejected task may be submitted again, e.g. after an approval)
            outcome = await decide(task)
            subject = subjects.model_selected if isinstance(outcome, ModelSelected) else subjects.task_rejected
            async with unit_of_work(rt.pool) as conn:
                if not await claim(conn, task.event_id, subjects.task_arrived):
                    return
                inserted = await conn.fetchval(
                    """INSERT INTO decisions (task_id, arrived_event_id, status, org_id, scope, task_type, model,
                           provider, tier, estimated_cost_usd, reason, outcome_event)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                       ON CONFLICT (task_id) DO UPDATE SET arrived_event_id = EXCLUDED.arrived_event_id,
                           status = EXCLUDED.status, model = EXCLUDED.model, provider = EXCLUDED.provider,
                           tier = EXCLUDED.tier, estimated_cost_usd = EXCLUDED.estimated_cost_usd,
                           reason = EXCLUDED.reason, outcome_event = EXCLUDED.outcome_event, decided_at = now()
                       WHERE decisions.status = 'rejected'
                       RETURNING 1""",
                    task.task_id,
                    task.event_id,
                    "selected" if isinstance(outcome, ModelSelected) else "rejected",
                    task.scope.org_id,
                    task.scope.model_dump(mode="json"),
                    task.task_type,
                    *_decision_columns(outcome),
                    outcome.model_dump(mode="json"),
                )
                if inserted:
                    await enqueue(conn, subject, outcome)
            if isinstance(outcome, ModelSelected):
                span.set_attribute("routewise.model", outcome.model)
                span.set_attribute("routewise.strategy", outcome.strategy)
                span.set_attribute("routewise.estimated_cost_usd", str(outcome.estimated_cost_usd))
                log.info(
                    "model selected", model=outcome.model, tier=outcome.tier.value, cost=str(outcome.estimated_cost_usd)
                )
            else:
                span.set_attribute("routewise.rejection_reason", outcome.reason.value)
                log.info("task rejected", reason=outcome.reason.value, detail=outcome.detail)
        rt.outbox.poke()

    async def get_decision(req: GetDecision) -> Decision:
        row = await rt.pool.fetchrow("SELECT * FROM decisions WHERE task_id = $1", req.task_id)
        if row is None:
            raise RoutewiseError(f"no decision is known for task {req.task_id}", code="not_found")
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
        )

    consume(router, rt.settings, NAME, subjects.task_arrived, TaskArrived, on_task_arrived)
    reply(router, subjects.routing_decision, NAME, GetDecision, get_decision)


def _decision_columns(outcome: ModelSelected | TaskRejected) -> tuple[object, ...]:
    if isinstance(outcome, ModelSelected):
        return (outcome.model, outcome.provider, outcome.tier.value, outcome.estimated_cost_usd, None)
    return (None, None, None, None, outcome.reason.value)


SPEC = ServiceSpec(name=NAME, migrations=Path(__file__).parent / "migrations", register=register)
