"""The metrics report: savings, cache hits, strategies, confidence, model shares, rejections, fallbacks,
estimate error and cost per day/week/month, read from the task ledger in one snapshot.

The ledger is one row per task; every aggregate reads the scope's rows of the period
(``reported_at``: decision time, else arrival time). Each query is a range scan of an index on
(scope, reported_at), so a report reads the period's rows only, not the whole ledger
(bench/metrics_report.py measures it). Daily rollups per scope would be the next step for
periods of many millions of tasks.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from routewise.contracts.events import HIGH_CONFIDENCE, scope_parts
from routewise.contracts.metrics import (
    MEDIUM_CONFIDENCE,
    Breakdown,
    CacheSavings,
    ConfidenceMetrics,
    CostSavings,
    EstimateError,
    GetMetricsReport,
    MetricsReport,
    ModelShare,
    PeriodCost,
    SelfPricedSpend,
    StrategyMetrics,
)
from routewise.runtime.db import Connection

_CONFIDENCE = (
    f"CASE WHEN confidence IS NULL THEN NULL WHEN confidence >= {HIGH_CONFIDENCE} THEN 'high' "
    f"WHEN confidence >= {MEDIUM_CONFIDENCE} THEN 'medium' ELSE 'low' END"
)
_PRICED = (
    "baseline_actual_cost_usd IS NOT NULL AND baseline_priced_tokens = "
    "ARRAY[input_tokens, output_tokens, coalesce(cached_input_tokens, 0)]::bigint[]"
)
"""The baseline was priced at the task's current token counts (the sweeper has caught up)."""
_SCOPE_COLUMN = {"team": "team_id", "user": "user_id", "workspace": "workspace_id"}
_DIMENSION = {
    "strategy": "strategy",
    "confidence": _CONFIDENCE,
    "model": "model",
    "pattern": "pattern",
    "policy": "policy",
    "task_type": "task_type",
    "scope": "org_id || coalesce('/' || team_id, '') || coalesce('/' || user_id, '')",
}
_COST = "coalesce(actual_cost_usd, estimated_cost_usd)"
_QUALITY = "count(quality) AS rated, avg(quality) AS quality"
"""How many of the rows were rated (FeedbackRecorded), and their mean quality."""
_ONE_CALL = "cost_events = 1 AND actual_model = model AND actual_cost_usd > 0"
"""The task made exactly the call that was estimated: its estimate error is meaningful."""
_CALLED = "cost_events > 0"
"""The task has a call that stands: one whose cost was voided is not one (it saved nothing)."""


def period_filter(req: GetMetricsReport) -> tuple[str, list[Any]]:
    """The WHERE condition (and its arguments) selecting the report's scope and period."""
    where = "reported_at >= now() - make_interval(days => $1)"
    args: list[Any] = [req.days]
    if req.scope_type is not None and req.scope_id is not None:
        org, local = scope_parts(req.scope_type, req.scope_id)
        where += " AND org_id = $2"
        args.append(org)
        if local is not None:  # a team, user or workspace of that org
            where += f" AND {_SCOPE_COLUMN[req.scope_type]} = $3"
            args.append(local)
    return where, args


def _percent_saved(saved: Decimal, baseline: Decimal) -> float | None:
    return round(float(saved / baseline * 100), 2) if baseline else None


def _savings(tasks: int, cost: Decimal | None, baseline: Decimal | None, days: int) -> CostSavings:
    cost, baseline = cost or Decimal(0), baseline or Decimal(0)
    saved = baseline - cost
    return CostSavings(
        total_saved=saved,
        percent_saved=_percent_saved(saved, baseline),
        intelligent_cost=cost,
        baseline_cost=baseline,
        period_days=days,
        tasks=tasks,
    )


async def report(conn: Connection, req: GetMetricsReport) -> MetricsReport:
    where, args = period_filter(req)
    ledger = f"FROM task_ledger WHERE {where}"
    estimated = await conn.fetchrow(
        f"SELECT count(*) AS n, sum(estimated_cost_usd) AS cost, sum(baseline_cost_usd) AS baseline "
        f"{ledger} AND status = 'selected'",
        *args,
    )
    actual = await conn.fetchrow(
        f"""SELECT count(*) FILTER (WHERE {_PRICED}) AS n,
                   sum(actual_cost_usd) FILTER (WHERE {_PRICED}) AS cost,
                   sum(baseline_actual_cost_usd) FILTER (WHERE {_PRICED}) AS baseline,
                   count(*) FILTER (WHERE NOT ({_PRICED}) OR baseline_actual_cost_usd IS NULL) AS unpriced
            {ledger} AND status = 'selected' AND actual_cost_usd IS NOT NULL AND {_CALLED}""",
        *args,
    )
    strategies = await conn.fetch(
        f"""SELECT strategy, count(*) AS n, avg({_COST}) AS avg_cost,
                   100.0 * avg((confidence >= {HIGH_CONFIDENCE})::int) AS high, {_QUALITY}
            {ledger} AND status = 'selected' GROUP BY strategy ORDER BY n DESC, strategy""",
        *args,
    )
    confidences = await conn.fetch(
        f"""SELECT {_CONFIDENCE} AS bucket, count(*) AS n, avg({_COST}) AS avg_cost
            {ledger} AND status = 'selected' GROUP BY bucket ORDER BY bucket""",
        *args,
    )
    models = await conn.fetch(
        f"""SELECT model, count(*) AS n, avg({_COST}) AS avg_cost, sum(count(*)) OVER () AS total, {_QUALITY}
            {ledger} AND status = 'selected' GROUP BY model ORDER BY n DESC, model""",
        *args,
    )
    rejections = await conn.fetch(
        f"""SELECT rejection_reason, count(*) AS n, count(*) FILTER (WHERE status = 'selected') AS later_selected
            {ledger} AND rejected_at IS NOT NULL GROUP BY rejection_reason""",
        *args,
    )
    outcomes = await conn.fetchrow(
        f"""SELECT avg((cost_events > 1 OR actual_model IS DISTINCT FROM model)::int) AS fallback_rate,
                   count(*) FILTER (WHERE {_ONE_CALL}) AS n,
                   avg(abs(estimated_cost_usd - actual_cost_usd) / actual_cost_usd) FILTER (WHERE {_ONE_CALL}) AS mape,
                   avg((estimated_cost_usd - actual_cost_usd) / actual_cost_usd) FILTER (WHERE {_ONE_CALL}) AS bias
            {ledger} AND status = 'selected' AND actual_cost_usd IS NOT NULL""",
        *args,
    )
    hits = await conn.fetchrow(
        f"SELECT count(*) AS n, coalesce(sum(avoided_cost_usd), 0) AS avoided {ledger} AND cached", *args
    )
    trust = await conn.fetchrow(
        f"""SELECT count(*) FILTER (WHERE self_priced_cost_usd IS NOT NULL) AS self_priced,
                   coalesce(sum(self_priced_cost_usd), 0) AS self_priced_cost,
                   count(*) FILTER (WHERE cost_adjustments > 0) AS adjusted
            {ledger}""",
        *args,
    )
    assert estimated is not None and actual is not None and outcomes is not None and hits is not None
    assert trust is not None

    async def per(unit: str) -> list[PeriodCost]:
        rows = await conn.fetch(
            f"""SELECT date_trunc('{unit}', cost_recorded_at, 'UTC') AS start,
                       sum(actual_cost_usd) AS cost, count(*) AS n
                {ledger} AND actual_cost_usd IS NOT NULL GROUP BY start ORDER BY start""",
            *args,
        )
        return [PeriodCost(start=r["start"], cost=r["cost"], tasks=r["n"]) for r in rows]

    breakdown = None
    if req.by is not None:
        key = _DIMENSION[req.by]
        rows = await conn.fetch(
            f"""SELECT coalesce(({key})::text, '—') AS key, count(*) AS n,
                       count(*) FILTER (WHERE status = 'selected') AS selected,
                       count(*) FILTER (WHERE status = 'rejected') AS rejected,
                       coalesce(sum(estimated_cost_usd), 0) AS estimated,
                       coalesce(sum(baseline_cost_usd), 0) AS baseline,
                       coalesce(sum(actual_cost_usd), 0) AS actual,
                       coalesce(sum(baseline_actual_cost_usd - actual_cost_usd)
                           FILTER (WHERE {_PRICED} AND {_CALLED}), 0) AS actual_saved,
                       {_QUALITY}
                {ledger} GROUP BY 1 ORDER BY n DESC, 1""",
            *args,
        )
        breakdown = [
            Breakdown(
                key=r["key"],
                tasks=r["n"],
                selected=r["selected"],
                rejected=r["rejected"],
                estimated_cost=r["estimated"],
                baseline_cost=r["baseline"],
                actual_cost=r["actual"],
                estimated_saved=r["baseline"] - r["estimated"],
                percent_saved=_percent_saved(r["baseline"] - r["estimated"], r["baseline"]),
                actual_saved=r["actual_saved"],
                **_quality(r),
            )
            for r in rows
        ]
    return MetricsReport(
        period_days=req.days,
        scope=f"{req.scope_type}:{req.scope_id}" if req.scope_type else None,
        cost_savings=_savings(estimated["n"], estimated["cost"], estimated["baseline"], req.days),
        actual_savings=_savings(actual["n"], actual["cost"], actual["baseline"], req.days),
        actual_unpriced_tasks=actual["unpriced"],
        cache=CacheSavings(hits=hits["n"], avoided_cost_usd=hits["avoided"]),
        self_priced=SelfPricedSpend(tasks=trust["self_priced"], cost_usd=trust["self_priced_cost"]),
        adjusted_tasks=trust["adjusted"],
        by_strategy=[
            StrategyMetrics(
                strategy=r["strategy"] or "—",
                count=r["n"],
                avg_cost=_money(r["avg_cost"]),
                high_confidence_pct=round(float(r["high"] or 0), 2),
                **_quality(r),
            )
            for r in strategies
        ],
        by_confidence=[
            ConfidenceMetrics(confidence=r["bucket"], count=r["n"], avg_cost=_money(r["avg_cost"])) for r in confidences
        ],
        selection_patterns=[
            ModelShare(
                model=r["model"] or "—",
                count=r["n"],
                share_pct=round(100 * r["n"] / r["total"], 2),
                avg_cost=_money(r["avg_cost"]),
                **_quality(r),
            )
            for r in models
        ],
        rejections={r["rejection_reason"] or "unknown": r["n"] for r in rejections},
        rejected_then_selected=sum(r["later_selected"] for r in rejections),
        fallback_rate=None if outcomes["fallback_rate"] is None else round(float(outcomes["fallback_rate"]), 4),
        estimate_error=EstimateError(
            tasks=outcomes["n"],
            mape_pct=None if outcomes["mape"] is None else round(float(outcomes["mape"]) * 100, 2),
            bias_pct=None if outcomes["bias"] is None else round(float(outcomes["bias"]) * 100, 2),
        ),
        cost_per_day=await per("day"),
        cost_per_week=await per("week"),
        cost_per_month=await per("month"),
        breakdown=breakdown,
        by=req.by,
    )


def _money(value: Decimal | None) -> Decimal | None:
    """An average as a Usd value (12 places at most)."""
    return None if value is None else value.quantize(Decimal("1e-12"))


def _quality(row: Any) -> dict[str, Any]:
    """The rated count and mean quality (0..1, 4 places) of a row built with ``_QUALITY``."""
    quality = row["quality"]
    return {"rated": row["rated"], "avg_quality": None if quality is None else round(float(quality), 4)}
