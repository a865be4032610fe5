"""Benchmark: how long `routewise metrics` takes as the task ledger grows.

The metrics service runs as a process on a fresh database; the ledger is filled straight in
Postgres with ``--rows`` synthetic tasks (default 1,000,000) spread evenly over the last 90 days,
100 orgs of 4 teams, models, strategies, rejections (5 %), costs, baselines priced at the real
tokens, and ratings on a fifth of them. Then each report below is asked over the bus
(``metrics.report``) ``--repeat`` times; the median and max are written, with the rows the
period holds and whether the plan used the period indexes. The baseline-pricing sweeper's
query (run every second) is timed too.

    uv run python -m bench.metrics_report [--rows 1000000] [--repeat 5]

Writes bench/results/metrics_report.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import asyncpg

from bench.common import environment, write_results
from routewise.client import RoutewiseClient
from routewise.contracts.metrics import GetMetricsReport, MetricsReport
from routewise.runtime.settings import Settings
from routewise.services.metrics.report import period_filter
from routewise.services.metrics.repository import TO_PRICE

FILL = """
INSERT INTO task_ledger (
    task_id, org_id, team_id, user_id, task_type, status, rejection_reason, rejected_at, model, provider, tier,
    strategy, estimated_cost_usd, baseline_model, baseline_cost_usd, actual_model, actual_cost_usd,
    input_tokens, output_tokens, cached_input_tokens, decided_at, arrived_at, cost_recorded_at, cost_events,
    policy, pattern, confidence, baseline_actual_cost_usd, baseline_priced_tokens, quality, quality_at)
SELECT gen_random_uuid(), 'org-' || (i % 100), 'team-' || (i % 400), 'user-' || (i % 4000),
       (ARRAY['normal', 'fix_bug', 'simple_query', 'research'])[1 + i % 4],
       CASE WHEN rejected THEN 'rejected' ELSE 'selected' END,
       CASE WHEN rejected THEN 'budget_exhausted' END, CASE WHEN rejected THEN at END,
       CASE WHEN NOT rejected THEN (ARRAY['gpt-5-nano', 'gpt-4.1-mini', 'claude-sonnet-4-5', 'gpt-4.1'])[1 + i % 4] END,
       CASE WHEN NOT rejected THEN 'openai' END, CASE WHEN NOT rejected THEN 'standard' END,
       CASE WHEN NOT rejected THEN (ARRAY['complexity', 'hybrid'])[1 + i % 2] END,
       CASE WHEN NOT rejected THEN 0.0001 * (1 + i % 50) END, CASE WHEN NOT rejected THEN 'gpt-4.1' END,
       CASE WHEN NOT rejected THEN 0.004 END,
       CASE WHEN NOT rejected THEN (ARRAY['gpt-5-nano', 'gpt-4.1-mini', 'claude-sonnet-4-5', 'gpt-4.1'])[1 + i % 4] END,
       CASE WHEN NOT rejected THEN 0.00011 * (1 + i % 50) END,
       CASE WHEN NOT rejected THEN 500 + i % 1000 END, CASE WHEN NOT rejected THEN 200 + i % 300 END,
       CASE WHEN NOT rejected THEN 0 END,
       at, at - interval '50 milliseconds', CASE WHEN NOT rejected THEN at + interval '2 seconds' END,
       CASE WHEN rejected THEN 0 ELSE 1 END,
       'normal', (ARRAY['factual', 'code', 'analysis'])[1 + i % 3], (i % 100) / 100.0,
       CASE WHEN NOT rejected THEN 0.0045 END,
       CASE WHEN NOT rejected THEN ARRAY[500 + i % 1000, 200 + i % 300, 0]::bigint[] END,
       CASE WHEN i % 5 = 0 AND NOT rejected THEN 0.5 + (i % 50) / 100.0 END,
       CASE WHEN i % 5 = 0 AND NOT rejected THEN at + interval '1 minute' END
FROM (SELECT i, i % 20 = 7 AS rejected, now() - (i % 90) * interval '1 day' - (i % 86400) * interval '1 second' AS at
      FROM generate_series($1::bigint, $2::bigint) AS i) AS s
"""

SWEEP = "EXPLAIN (ANALYZE, FORMAT JSON) " + TO_PRICE.replace("$1", "200")

REPORTS: list[tuple[str, dict[str, Any]]] = [
    ("all orgs, 1 day", {"days": 1}),
    ("all orgs, 7 days", {"days": 7}),
    ("all orgs, 30 days", {"days": 30}),
    ("all orgs, 30 days, by model", {"days": 30, "by": "model"}),
    ("one org, 7 days", {"days": 7, "scope_type": "org", "scope_id": "org-42"}),
    ("one org, 30 days, by task_type", {"days": 30, "scope_type": "org", "scope_id": "org-42", "by": "task_type"}),
    ("one team, 30 days", {"days": 30, "scope_type": "team", "scope_id": "org-42/team-42"}),
]


async def fill(dsn: str, rows: int) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "metrics"})
    try:
        chunk = 100_000
        for first in range(0, rows, chunk):
            await conn.execute(FILL, first, min(first + chunk, rows) - 1)
        await conn.execute("ANALYZE task_ledger")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def plan(dsn: str, sql: str, *args: Any) -> dict[str, Any]:
    """``sql``'s EXPLAIN (FORMAT JSON) output, parsed."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "metrics"})
    try:
        return json.loads(await conn.fetchval(sql, *args))[0]  # type: ignore[no-any-return]
    finally:
        await conn.close()


def uses_index(node: dict[str, Any]) -> bool:
    return "Index" in node["Node Type"] or any(uses_index(child) for child in node.get("Plans", []))


async def period_rows(dsn: str, ask: GetMetricsReport) -> tuple[int, bool]:
    """How many rows the report's period and scope hold, and whether reading them uses an index."""
    where, args = period_filter(ask)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "metrics"})
    try:
        count = await conn.fetchval(f"SELECT count(*) FROM task_ledger WHERE {where}", *args)
    finally:
        await conn.close()
    explained = await plan(
        dsn, f"EXPLAIN (FORMAT JSON) SELECT sum(actual_cost_usd) FROM task_ledger WHERE {where}", *args
    )
    return count, uses_index(explained["Plan"])


async def measure(settings: Settings, dsn: str, repeat: int) -> list[dict[str, Any]]:
    results = []
    async with RoutewiseClient(settings) as rw:
        for name, fields in REPORTS:
            ask = GetMetricsReport(**fields)
            seconds = []
            report = None
            for _ in range(repeat):
                started = time.perf_counter()
                report = await rw.request(rw.subjects.metrics_report, ask, MetricsReport, timeout=300)
                seconds.append(time.perf_counter() - started)
            assert report is not None
            rows, indexed = await period_rows(dsn, ask)
            results.append(
                {
                    "report": name,
                    "rows_in_period": rows,
                    "period_index_used": indexed,
                    "tasks_selected": report.cost_savings.tasks,
                    "median_ms": round(statistics.median(seconds) * 1000, 1),
                    "max_ms": round(max(seconds) * 1000, 1),
                }
            )
            print(results[-1], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with environment({"metrics": 1}) as (env, _stack):
        dsn = env.dsns["metrics"]
        fill_s = asyncio.run(fill(dsn, args.rows))
        print(f"filled {args.rows} rows in {fill_s:.1f} s", flush=True)
        settings = Settings(nats_url=env.nats_url, namespace=env.namespace)
        reports = asyncio.run(measure(settings, dsn, args.repeat))
        sweep = asyncio.run(plan(dsn, SWEEP))
    write_results(
        "metrics_report",
        {
            "ledger_rows": args.rows,
            "fill_seconds": round(fill_s, 1),
            "repeat": args.repeat,
            "reports": reports,
            "pricing_sweep": {
                "ms": sweep["Execution Time"],
                "index_used": uses_index(sweep["Plan"]),
            },
        },
    )


if __name__ == "__main__":
    main()
