"""``routewise performance``: what each model really delivers."""

from __future__ import annotations

from typing import Annotated

import typer

from routewise.cli.common import JsonOpt, NatsUrlOpt, app, ask, build, console, table
from routewise.contracts.performance import Interval, Performance, QueryPerformance


def _pct(value: float | None, ci: Interval | None = None) -> str:
    if value is None:
        return "—"
    text = f"{value:.0%}"
    return f"{text} ({ci.low:.0%}–{ci.high:.0%})" if ci else text


@app.command()
def performance(
    model: Annotated[str | None, typer.Option("--model", help="Only this model.")] = None,
    task_type: Annotated[str | None, typer.Option("--type", help="Per model, for this task type.")] = None,
    pattern: Annotated[str | None, typer.Option("--pattern", help="Per model, for this prompt pattern.")] = None,
    window: Annotated[str, typer.Option("--window", help="1h, 24h, 7d or all.")] = "24h",
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Success, errors, latency, speed, cost, quality and health per model."""
    request = build(QueryPerformance, as_json, model=model, task_type=task_type, pattern=pattern, window=window)
    result = ask(nats_url, lambda s: s.performance_query, request, Performance, as_json)
    if as_json:
        print(result.model_dump_json())
        return
    rows = [
        [
            s.model + (f" [{s.task_type or s.pattern}]" if s.task_type or s.pattern else ""),
            s.requests,
            _pct(s.success_rate, s.success_ci95),
            ", ".join(f"{k} {v}" for k, v in s.errors_by_type.items()) or "—",
            "—" if s.latency_p50_ms is None else f"{s.latency_p50_ms:.0f} / {s.latency_p95_ms:.0f} ms",
            "—" if s.output_tokens_per_s is None else f"{s.output_tokens_per_s:.0f}",
            "—" if s.mean_cost_usd is None else f"${s.mean_cost_usd:.6f}",
            "—" if s.mean_quality is None else f"{s.mean_quality:.2f} (n={s.quality_samples})",
            result.health[s.model].state if s.model in result.health else "healthy",
        ]
        for s in result.stats
    ]
    columns = [
        "model",
        "calls",
        "success (95% CI)",
        "errors",
        "latency p50 / p95",
        "tokens/s",
        "mean cost",
        "quality",
        "health",
    ]
    console.print(table(f"Performance over {window}", columns, rows) if rows else f"no outcomes in the last {window}")
    for name, h in sorted(result.health.items()):
        if h.state != "healthy":
            console.print(f"[bold]{name}[/] is {h.state} since {h.since:%Y-%m-%d %H:%M:%S}: {h.reason}")
