"""The ``routewise`` command line: rich output for people, ``--json`` for scripts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypeVar
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table

from shared.errors import RemoteError, RoutewiseError
from shared.events import CostRecorded, FeedbackRecorded, ModelSelected, Scope, TaskArrived, TaskRejected
from shared.settings import DEFAULT_NATS_URL, Settings

app = typer.Typer(
    name="routewise",
    help="Cost-aware routing of LLM tasks over NATS JetStream.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

NatsUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--nats-url", help="NATS URL [default: $ROUTEWISE_NATS_URL, else `routewise dev`'s, else nats://127.0.0.1:4222]"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


# ------------------------------------------------------------------ where things are


def home() -> Path:
    return Path(os.environ.get("ROUTEWISE_HOME") or Path.home() / ".routewise")


def dev_state_path() -> Path:
    return home() / "dev.json"


def read_dev_state() -> dict[str, Any] | None:
    path = dev_state_path()
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = state.get("pid")
    if isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # left behind by a `routewise dev` that is gone
        except PermissionError:
            pass
    return state


def resolve_settings(nats_url: str | None) -> Settings:
    """--nats-url, else ROUTEWISE_NATS_URL, else what `routewise dev` wrote, else the default."""
    overrides: dict[str, Any] = {}
    if nats_url:
        overrides["nats_url"] = nats_url
    elif not os.environ.get("ROUTEWISE_NATS_URL"):
        state = read_dev_state()
        overrides["nats_url"] = state["nats_url"] if state else DEFAULT_NATS_URL
        if state and not os.environ.get("ROUTEWISE_NAMESPACE"):
            overrides["namespace"] = state.get("namespace", "routewise")
    return Settings(**overrides)


# ------------------------------------------------------------------ output helpers


def fail(message: str, as_json: bool, code: str = "error") -> typer.Exit:
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message}}))
    else:
        err_console.print(f"[bold red]error[/]: {message}")
    return typer.Exit(1)


def run_async(coro_fn: Callable[[], Awaitable[T]], as_json: bool) -> T:
    try:
        return asyncio.run(coro_fn())  # type: ignore[arg-type]
    except RoutewiseError as exc:
        raise fail(exc.message, as_json, exc.code) from None


def emit(data: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps(data, default=str, ensure_ascii=False))
        return
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for key, value in data.items():
        table.add_row(key, "—" if value is None else str(value))
    console.print(table)


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


# ------------------------------------------------------------------ commands


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
    from pydantic import ValidationError

    from shared.client import RoutewiseClient
    from shared.telemetry import current_trace_id, setup_tracing

    settings = resolve_settings(nats_url)
    try:
        event = TaskArrived(
            scope=Scope(org_id=org, team_id=team, user_id=user, workspace_id=workspace),
            task_type=task_type,
            prompt=prompt,
        )
    except ValidationError as exc:
        raise fail(_first_error(exc), as_json, "invalid_request") from None
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


@app.command()
def dev(
    demo: Annotated[bool, typer.Option("--demo", help="Send a few tasks and costs, and show what happened.")] = False,
    once: Annotated[
        bool, typer.Option("--once", help="Stop after start-up (and the demo) instead of waiting for Ctrl-C.")
    ] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start from empty NATS and Postgres data.")] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where embedded servers keep data [default: $ROUTEWISE_HOME/dev].")
    ] = None,
) -> None:
    """Run Routewise locally: embedded NATS and Postgres, the five services, until Ctrl-C."""
    import shutil

    from shared.embedded import EmbeddedNats, EmbeddedPostgres
    from shared.provision import provision
    from shared.stack import Stack

    data = data_dir or home() / "dev"
    if fresh and data.exists():
        shutil.rmtree(data)
    if (state := read_dev_state()) is not None:
        raise fail(f"`routewise dev` is already running (pid {state['pid']}, {state['nats_url']})", False)
    data.mkdir(parents=True, exist_ok=True)
    nats_server = EmbeddedNats(data / "nats")
    postgres = EmbeddedPostgres(data / "postgres")
    stack: Stack | None = None

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM both stop cleanly; SIGINT explicitly, as a shell may start us with it ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        with console.status("starting NATS and Postgres…"):
            nats_url = nats_server.start()
            admin_dsn = postgres.start()
            dsns = asyncio.run(provision(admin_dsn, "routewise"))
        with console.status("starting the five services…"):
            stack = Stack(nats_url, dsns, "routewise", data / "logs")
            stack.start()
            stack.wait_ready(timeout=90)
        _write_state(
            {
                "pid": os.getpid(),
                "nats_url": nats_url,
                "namespace": "routewise",
                "services": {n: p.port for n, p in stack.processes.items()},
            }
        )
        _print_stack(nats_url, stack, data)
        if demo:
            asyncio.run(_demo(Settings(nats_url=nats_url, namespace="routewise")))
        if once:
            return
        console.print("[dim]Ctrl-C stops everything.[/]")
        while True:
            time.sleep(0.2)
            for name, sp in stack.processes.items():
                if sp.proc.poll() is not None:
                    raise fail(f"{name} stopped (exit {sp.proc.returncode}); see {sp.log_path}", False)
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("stopping…"):
            if stack is not None:
                stack.stop()
            nats_server.stop()
            postgres.stop()
            dev_state_path().unlink(missing_ok=True)
        console.print("stopped.")


def _write_state(state: dict[str, Any]) -> None:
    path = dev_state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as fh:
        json.dump(state, fh)
    os.replace(fh.name, path)


def _print_stack(nats_url: str, stack: Any, data: Path) -> None:
    table = Table(title="Routewise is running", title_justify="left")
    table.add_column("service")
    table.add_column("health / metrics")
    table.add_column("log")
    for name, sp in stack.processes.items():
        table.add_row(name, f"http://127.0.0.1:{sp.port}/readyz  /metrics", str(sp.log_path))
    console.print(table)
    console.print(f"NATS: [bold]{nats_url}[/]  (saved to {dev_state_path()}, other commands use it)")
    console.print(f"Data: {data}")


async def _demo(settings: Settings) -> None:
    from shared.client import RoutewiseClient
    from shared.requests import BudgetStatus, GetBudgetStatus, GetMetricsSummary, MetricsSummary, Price, PriceUsage

    prompts = [
        ("simple_query", "What is the capital of France?"),
        ("normal", "Summarize the main trade-offs between SQL and NoSQL databases for a startup."),
        (
            "code",
            "Design a distributed rate limiter. Analyze the trade-offs, then write the Python code:\n"
            "```python\nclass RateLimiter:\n    ...\n```\nand prove it is correct under concurrency, step by step.",
        ),
    ]
    table = Table(title="Demo: three tasks routed, run and costed", title_justify="left")
    for col in ("task", "type", "model", "tier", "estimated $", "baseline $", "actual $"):
        table.add_column(col)
    org = "demo"
    async with RoutewiseClient(settings) as rw:
        for task_type, prompt in prompts:
            event = TaskArrived(scope=Scope(org_id=org, team_id="platform"), task_type=task_type, prompt=prompt)
            outcome = await rw.submit_task(event, wait=30)
            if not isinstance(outcome, ModelSelected):
                table.add_row(
                    str(event.task_id)[:8], task_type, "rejected" if outcome else "no decision", "", "", "", ""
                )
                continue
            # pretend the application ran the call and used about what was estimated
            output = outcome.estimated_output_tokens
            priced = await rw.request(
                settings.subjects.cost_price,
                PriceUsage(
                    model=outcome.model,
                    provider=outcome.provider,
                    input_tokens=outcome.estimated_input_tokens,
                    output_tokens=output,
                ),
                Price,
            )
            await rw.record_cost(
                CostRecorded(
                    task_id=outcome.task_id,
                    scope=outcome.scope,
                    task_type=task_type,
                    model=outcome.model,
                    provider=outcome.provider,
                    input_tokens=outcome.estimated_input_tokens,
                    output_tokens=output,
                    cost_usd=priced.cost_usd,
                    latency_ms=850.0,
                )
            )
            await rw.record_feedback(
                FeedbackRecorded(
                    task_id=outcome.task_id, scope=outcome.scope, model=outcome.model, quality=0.9, task_type=task_type
                )
            )
            table.add_row(
                str(outcome.task_id)[:8],
                task_type,
                outcome.model,
                outcome.tier.value,
                f"{outcome.estimated_cost_usd:.6f}",
                f"{outcome.baseline_cost_usd:.6f}",
                f"{priced.cost_usd:.6f}",
            )
        console.print(table)
        budget = summary = None
        for _ in range(50):  # the costs are events: give the consumers a moment
            budget = await rw.request(settings.subjects.budget_status, GetBudgetStatus(org_id=org), BudgetStatus)
            summary = await rw.request(settings.subjects.metrics_summary, GetMetricsSummary(org_id=org), MetricsSummary)
            if budget.costs_recorded >= 3 and summary.costs_recorded >= 3:
                break
            await asyncio.sleep(0.1)
        assert budget is not None and summary is not None
        console.print(
            f"budget-enforcer: org [bold]{org}[/] has spent ${budget.spent_usd:.6f} over {budget.costs_recorded} calls"
        )
        console.print(
            f"metrics: {summary.selected} selected, {summary.rejected} rejected;"
            f" estimated ${summary.estimated_cost_usd:.6f} vs baseline ${summary.baseline_cost_usd:.6f};"
            f" actual ${summary.actual_cost_usd:.6f}"
        )


def _first_error(exc: Any) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


def main() -> None:
    try:
        app()
    except RemoteError as exc:  # pragma: no cover - commands catch their own
        err_console.print(f"[bold red]error[/]: {exc.message}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
