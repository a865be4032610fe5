"""``routewise task`` and ``routewise record``: a task in, a decision out, a cost recorded."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

import typer

from shared.cli.common import JsonOpt, NatsUrlOpt, app, build, emit, fail, resolve_settings, run_async
from shared.errors import RoutewiseError
from shared.events import CostRecorded, ModelSelected, Scope, TaskArrived, TaskRejected


def decision_view(outcome: ModelSelected | TaskRejected, trace_id: str | None) -> dict[str, Any]:
    if isinstance(outcome, ModelSelected):
        return {
            "task_id": str(outcome.task_id),
            "status": "selected",
            "model": outcome.model,
            "provider": outcome.provider,
            "tier": outcome.tier.value,
            "estimated_cost_usd": str(outcome.estimated_cost_usd),
            "baseline_model": outcome.baseline_model,
            "baseline_cost_usd": str(outcome.baseline_cost_usd),
            "strategy": outcome.strategy,
            "reasoning": outcome.reasoning,
            "trace_id": trace_id,
        }
    return {
        "task_id": str(outcome.task_id),
        "status": "rejected",
        "reason": outcome.reason.value,
        "detail": outcome.detail,
        "trace_id": trace_id,
    }


@app.command()
def task(
    prompt: Annotated[str, typer.Argument(help="The task's prompt.")],
    task_type: Annotated[str, typer.Option("--type", help="Task type, e.g. normal, code, fix_bug.")] = "normal",
    org: Annotated[str, typer.Option("--org", help="Organisation that pays.")] = "default",
    team: Annotated[str | None, typer.Option("--team")] = None,
    user: Annotated[str | None, typer.Option("--user")] = None,
    workspace: Annotated[str | None, typer.Option("--workspace")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the decision.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the decision.")] = 30.0,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish a task and print the decision."""
    from shared.client import RoutewiseClient
    from shared.telemetry import current_trace_id, setup_tracing

    settings = resolve_settings(nats_url)
    scope = build(Scope, as_json, org_id=org, team_id=team, user_id=user, workspace_id=workspace)
    event = build(TaskArrived, as_json, scope=scope, task_type=task_type, prompt=prompt)
    provider = setup_tracing("routewise-cli")
    trace_id: str | None = None

    async def go() -> ModelSelected | TaskRejected | None:
        nonlocal trace_id
        async with RoutewiseClient(settings) as rw:
            from opentelemetry import trace

            with trace.get_tracer("routewise.cli").start_as_current_span("routewise task"):
                trace_id = current_trace_id()
                return await rw.submit_task(event, wait=timeout if wait else None)

    try:
        outcome = run_async(go, as_json)
    finally:
        provider.shutdown()
    if not wait:
        emit({"task_id": str(event.task_id), "status": "submitted", "trace_id": trace_id}, as_json, "Task submitted")
        return
    if outcome is None:
        raise fail(
            f"no decision for task {event.task_id} within {timeout}s (is the selector running?)", as_json, "timeout"
        )
    emit(decision_view(outcome, trace_id), as_json, "Decision")
    if isinstance(outcome, TaskRejected):
        raise typer.Exit(2)


@app.command()
def record(
    task_id: Annotated[UUID, typer.Argument(help="The task whose call you ran.")],
    input_tokens: Annotated[int, typer.Option("--input-tokens", min=0, help="Input tokens the call used.")],
    output_tokens: Annotated[int, typer.Option("--output-tokens", min=0, help="Output tokens the call produced.")],
    cached_tokens: Annotated[int, typer.Option("--cached-tokens", min=0, help="Input tokens read from cache.")] = 0,
    cost: Annotated[
        str | None, typer.Option("--cost", help="Actual cost in USD [default: priced by cost-predictor].")
    ] = None,
    latency_ms: Annotated[float | None, typer.Option("--latency-ms", min=0)] = None,
    failed: Annotated[str | None, typer.Option("--failed", help="The call failed with this error type.")] = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record what the call for a task really cost (for the model chosen for it)."""
    from shared.client import RoutewiseClient
    from shared.requests import Decision, GetDecision, Price, PriceUsage

    settings = resolve_settings(nats_url)
    amount: Decimal | None = None
    if cost is not None:
        try:
            amount = Decimal(cost)
        except ArithmeticError:
            raise fail(f"--cost must be a decimal amount of USD, not {cost!r}", as_json, "invalid_request") from None
        if not amount.is_finite() or amount < 0:
            raise fail("--cost must be a finite amount >= 0", as_json, "invalid_request")
    if cached_tokens > input_tokens:
        raise fail("--cached-tokens cannot exceed --input-tokens", as_json, "invalid_request")

    async def go() -> CostRecorded:
        async with RoutewiseClient(settings) as rw:
            decision = await rw.request(settings.subjects.routing_decision, GetDecision(task_id=task_id), Decision)
            if decision.status != "selected" or not decision.model or not decision.provider:
                raise RoutewiseError(
                    f"task {task_id} was rejected ({decision.reason}); no model ran, nothing to record",
                    code="task_rejected",
                )
            actual = amount
            if actual is None:
                priced = await rw.request(
                    settings.subjects.cost_price,
                    PriceUsage(
                        model=decision.model,
                        provider=decision.provider,
                        input_tokens=input_tokens,
                        output_tokens=output_tokens,
                        cached_input_tokens=cached_tokens,
                    ),
                    Price,
                )
                actual = priced.cost_usd
            event = CostRecorded(
                task_id=task_id,
                scope=decision.scope,
                task_type=decision.task_type,
                model=decision.model,
                provider=decision.provider,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cached_input_tokens=cached_tokens,
                cost_usd=actual,
                latency_ms=latency_ms,
                success=failed is None,
                error_type=failed,
            )
            await rw.record_cost(event)
            return event

    event = run_async(go, as_json)
    emit(
        {
            "task_id": str(event.task_id),
            "event_id": str(event.event_id),
            "model": event.model,
            "provider": event.provider,
            "input_tokens": event.input_tokens,
            "output_tokens": event.output_tokens,
            "cost_usd": str(event.cost_usd),
            "priced_by": "you" if amount is not None else "cost-predictor",
            "success": event.success,
        },
        as_json,
        "Cost recorded",
    )
