"""``routewise task`` and ``routewise record``: a task in, a decision out, a cost recorded."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

import typer

from routewise.cli.common import (
    JsonOpt,
    NatsUrlOpt,
    app,
    ask,
    build,
    bus_only,
    console,
    csv_list,
    emit,
    fail,
    run_async,
    table,
)
from routewise.client.discovery import resolve_settings
from routewise.contracts.errors import RoutewiseError
from routewise.contracts.events import (
    Constraints,
    CostRecorded,
    CostRefused,
    CostReported,
    ModelSelected,
    Scope,
    Strategy,
    TaskArrived,
    TaskRejected,
    fixed_point,
)
from routewise.contracts.routing import RoutingPreview
from routewise.contracts.vocabulary import ErrorCode


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
            "confidence": outcome.confidence,
            "experimental": outcome.experimental,
            "fallback_chain": ", ".join(outcome.fallback_chain),
            "reasoning": outcome.reasoning,
            "reservation_id": str(outcome.reservation_id) if outcome.reservation_id else None,
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
    policy: Annotated[str | None, typer.Option("--policy", help="Routing policy [default: the task type's].")] = None,
    auto_route: Annotated[bool, typer.Option("--auto-route", help="Let the learner route (hybrid strategy).")] = False,
    strategy: Annotated[
        Strategy | None, typer.Option("--strategy", help="Force complexity, learning or hybrid.")
    ] = None,
    quality_bias: Annotated[
        float | None,
        typer.Option("--quality-bias", min=0, max=1, help="0 = cheapest good enough … 1 = best quality."),
    ] = None,
    max_cost: Annotated[str | None, typer.Option("--max-cost", help="Most the task may cost (USD, p90).")] = None,
    min_quality: Annotated[float | None, typer.Option("--min-quality", min=0, max=1)] = None,
    providers: Annotated[str | None, typer.Option("--providers", help="Only these providers, comma-separated.")] = None,
    preview: Annotated[
        bool, typer.Option("--preview", help="Show the decision and its scores; reserve and publish nothing.")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the decision.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the decision.")] = 30.0,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish a task and print the decision (or, with --preview, what it would be and why)."""
    from routewise.client import RoutewiseClient
    from routewise.runtime.telemetry import current_trace_id, setup_tracing

    settings = resolve_settings(nats_url)
    scope = build(Scope, as_json, org_id=org, team_id=team, user_id=user, workspace_id=workspace)
    constraints = build(
        Constraints,
        as_json,
        max_cost_usd=max_cost,
        min_quality=min_quality,
        allowed_providers=csv_list(providers),
    )
    event = build(
        TaskArrived,
        as_json,
        scope=scope,
        task_type=task_type,
        prompt=prompt,
        policy=policy,
        auto_route=auto_route,
        strategy=strategy,
        quality_bias=quality_bias,
        constraints=constraints,
    )
    if preview:
        show_preview(ask(nats_url, lambda s: s.routing_decide, event, RoutingPreview, as_json), as_json)
        return
    bus_only("routewise task (without --preview)", as_json)
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
    view = decision_view(outcome, trace_id)
    if settings.jaeger_url and trace_id:
        view["trace_url"] = f"{settings.jaeger_url.rstrip('/')}/trace/{trace_id}"
    emit(view, as_json, "Decision")
    if isinstance(outcome, TaskRejected):
        raise typer.Exit(2)


def show_preview(result: RoutingPreview, as_json: bool) -> None:
    if as_json:
        print(result.model_dump_json())
    elif result.selected is None:
        assert result.rejected is not None
        emit(decision_view(result.rejected, None), as_json, "Preview: the task would be rejected")
    else:
        chosen = result.selected
        view = decision_view(chosen, None)
        for key in ("task_id", "reservation_id", "trace_id"):
            view.pop(key)
        view = {"policy": result.policy, "target_tier": result.target_tier, **view}
        emit(view, as_json, "Preview (nothing reserved or published)")
        rows = [
            [
                ("→ " if c.model == chosen.model else "  ") + c.model,
                c.tier.value,
                f"{c.predicted_quality:.2f}",
                f"{c.confidence:.2f}",
                fixed_point(c.estimated_cost_usd),
            ]
            for c in chosen.candidates
        ]
        title = "Candidates: predicted quality and estimated cost"
        console.print(table(title, ["model", "tier", "quality", "confidence", "estimated $"], rows))
        if result.excluded:
            console.print(table("Not candidates", ["model", "why"], [[m, w] for m, w in result.excluded.items()]))
    if result.rejected is not None:
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
    """Report what the call for a task really cost (for the model chosen for it): cost-predictor checks it
    against the price book and records it, or refuses it with the reason (exit code 1)."""
    from routewise.client import RoutewiseClient
    from routewise.contracts.cost import Price, PriceUsage
    from routewise.contracts.routing import Decision, GetDecision
    from routewise.runtime.telemetry import setup_tracing

    bus_only("routewise record", as_json)
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

    async def go() -> tuple[CostReported, CostRecorded | CostRefused | None]:
        async with RoutewiseClient(settings) as rw:
            decision = await rw.request(settings.subjects.routing_decision, GetDecision(task_id=task_id), Decision)
            if decision.status != "selected" or not decision.model or not decision.provider:
                raise RoutewiseError(
                    f"task {task_id} was rejected ({decision.reason}); no model ran, nothing to record",
                    code=ErrorCode.task_rejected,
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
            event = CostReported(
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
            # joins the task's trace; cost-predictor's verdict comes back within the request timeout
            verdict = await rw.record_cost(event, trace_context=decision.trace_context, wait=settings.request_timeout)
            return event, verdict

    provider = setup_tracing("routewise-cli")
    try:
        event, verdict = run_async(go, as_json)
    finally:
        provider.shutdown()  # exports the record span, when an OTLP endpoint is configured
    view: dict[str, Any] = {
        "task_id": str(event.task_id),
        "event_id": str(event.event_id),
        "model": event.model,
        "provider": event.provider,
        "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens,
        "cost_usd": fixed_point(event.cost_usd),
        "priced_by": "you" if amount is not None else "cost-predictor",
        "success": event.success,
    }
    if isinstance(verdict, CostRecorded):
        view |= {"status": "recorded", "self_priced": verdict.self_priced}
        emit(view, as_json, "Cost recorded" + (" (self-priced)" if verdict.self_priced else ""))
    elif isinstance(verdict, CostRefused):
        expected = verdict.expected_cost_usd
        view |= {
            "status": "refused",
            "reason": verdict.reason.value,
            "detail": verdict.detail,
            "expected_cost_usd": None if expected is None else fixed_point(expected),
        }
        emit(view, as_json, "Cost refused: nothing was charged")
        raise typer.Exit(1)
    else:
        view["status"] = "reported"  # cost-predictor has not answered yet: it checks it when it can
        emit(view, as_json, "Cost reported (not checked yet)")
