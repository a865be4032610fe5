"""``routewise metrics``: the savings routing made, and how it decided."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import typer

from routewise.cli.budgets import parse_scope
from routewise.cli.common import JsonOpt, NatsUrlOpt, app, ask, build, console, table
from routewise.contracts.events import HIGH_CONFIDENCE, fixed_point
from routewise.contracts.metrics import (
    MEDIUM_CONFIDENCE,
    CostSavings,
    GetMetricsReport,
    MetricsDimension,
    MetricsReport,
    PeriodCost,
    Rated,
)


def _usd(amount: Decimal | None) -> str:
    return "—" if amount is None else "$" + fixed_point(amount.quantize(Decimal("1e-6")) if amount else amount)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} %"


def _quality(rated: Rated) -> str:
    return "—" if rated.avg_quality is None else f"{rated.avg_quality:.2f} ({rated.rated})"


def _savings_row(name: str, s: CostSavings) -> list[Any]:
    return [name, s.tasks, _usd(s.intelligent_cost), _usd(s.baseline_cost), _usd(s.total_saved), _pct(s.percent_saved)]


def _periods(title: str, rows: list[PeriodCost]) -> None:
    if rows:
        body = [[f"{p.start:%Y-%m-%d}", p.tasks, _usd(p.cost)] for p in rows]
        console.print(table(title, ["from", "tasks", "actual cost"], body))


@app.command()
def metrics(
    days: Annotated[int, typer.Option("--days", min=1, max=3660, help="The last N days.")] = 7,
    scope: Annotated[str | None, typer.Option("--scope", help="Only this scope, TYPE:ID (e.g. org:acme).")] = None,
    by: Annotated[MetricsDimension | None, typer.Option("--by", help="Also break the period down by this.")] = None,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What routing saved against each task's baseline, and how it decided."""
    scope_type, scope_id = parse_scope(scope, as_json) if scope else (None, None)
    request = build(GetMetricsReport, as_json, days=days, scope_type=scope_type, scope_id=scope_id, by=by)
    r = ask(nats_url, lambda s: s.metrics_report, request, MetricsReport, as_json)
    if as_json:
        print(r.model_dump_json())
        return
    where = f" for {r.scope}" if r.scope else ""
    columns = ["savings", "tasks", "routed cost", "baseline cost", "saved", "saved %"]
    rows = [_savings_row("estimated", r.cost_savings), _savings_row("actual", r.actual_savings)]
    console.print(table(f"Savings over the last {r.period_days} days{where}", columns, rows))
    console.print(
        "estimated: the baseline's estimate minus the chosen model's, for every task given a model; "
        "actual: the baseline priced at the task's real tokens minus what its calls cost, for tasks with a cost"
        + (f" ({r.actual_unpriced_tasks} not priced yet or without a price)" if r.actual_unpriced_tasks else "")
    )
    if r.cache.hits:
        console.print(
            f"response cache: {r.cache.hits} tasks answered from the gateway's cache at $0, "
            f"{_usd(r.cache.avoided_cost_usd)} avoided"
        )
    if r.self_priced.tasks:
        console.print(
            f"self-priced: {_usd(r.self_priced.cost_usd)} of the actual cost, over {r.self_priced.tasks} tasks, "
            "was accepted on the application's word (no known price, or far from it)"
        )
    if r.adjusted_tasks:
        console.print(
            f"adjusted: {r.adjusted_tasks} of these tasks had a cost corrected or voided"
            " (every figure has the new cost)"
        )
    if r.by_strategy:
        body = [
            [s.strategy, s.count, _usd(s.avg_cost), _pct(s.high_confidence_pct), _quality(s)] for s in r.by_strategy
        ]
        columns = ["strategy", "tasks", "avg cost", "high confidence", "quality (rated)"]
        console.print(table("By strategy", columns, body))
    if r.by_confidence:
        body = [[c.confidence, c.count, _usd(c.avg_cost)] for c in r.by_confidence]
        bucket = f"confidence (high ≥ {HIGH_CONFIDENCE}, medium ≥ {MEDIUM_CONFIDENCE})"
        console.print(table("By confidence", [bucket, "tasks", "avg cost"], body))
    if r.selection_patterns:
        body = [[m.model, m.count, _pct(m.share_pct), _usd(m.avg_cost), _quality(m)] for m in r.selection_patterns]
        console.print(table("Models chosen", ["model", "tasks", "share", "avg cost", "quality (rated)"], body))
    rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(r.rejections.items())) or "none"
    if r.rejected_then_selected:
        rejected += f" ({r.rejected_then_selected} selected later)"
    e = r.estimate_error
    console.print(
        f"rejections: {rejected}; fallback rate: {_pct(None if r.fallback_rate is None else r.fallback_rate * 100)}; "
        f"estimate error over {e.tasks} tasks: MAPE {_pct(e.mape_pct)}, bias {_pct(e.bias_pct)}"
    )
    _periods("Actual cost per day (UTC)", r.cost_per_day)
    _periods("Per week", r.cost_per_week)
    _periods("Per month", r.cost_per_month)
    if r.breakdown is not None:
        body = [
            [
                b.key,
                b.tasks,
                b.rejected,
                _usd(b.estimated_cost),
                _usd(b.baseline_cost),
                _usd(b.actual_cost),
                _pct(b.percent_saved),
                _usd(b.actual_saved),
                _quality(b),
            ]
            for b in r.breakdown
        ]
        columns = [
            r.by or "",
            "tasks",
            "rejected",
            "estimated",
            "baseline",
            "actual",
            "est. saved %",
            "actual saved",
            "quality (rated)",
        ]
        console.print(table(f"By {r.by}", columns, body))
