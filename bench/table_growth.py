"""Benchmark: how much each service's tables grow per task, and so per million tasks.

Runs the five services (in this process, on real NATS and Postgres: env URLs, else embedded),
sends N tasks through the whole life (TaskArrived → decision, one CostRecorded, one
FeedbackRecorded) with a budget on the org, waits until metrics has every cost, then measures
each table's rows and size on disk (table, indexes and TOAST). The growth per million tasks is
that size per task times 1,000,000 — before retention prunes anything.

    uv run python -m bench.table_growth [--tasks 2000]

Writes bench/results/table_growth.json.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from decimal import Decimal
from typing import Any

import asyncpg

from bench.common import environment_servers, write_results
from routewise.client import CostRecorded, FeedbackRecorded, ModelSelected, RoutewiseClient, Scope, TaskArrived
from routewise.contracts.budget import Budget, CreateBudget
from routewise.contracts.metrics import GetMetricsSummary, MetricsSummary
from routewise.contracts.subjects import SERVICES
from routewise.runtime.inprocess import in_background
from routewise.runtime.settings import Settings

PROMPTS = [
    "What is the capital of France?",
    "Summarise the attached incident report and list the three most likely root causes.",
    "Write a Python function that merges two sorted lists, with tests.",
    "Explain the trade-offs between optimistic and pessimistic locking in Postgres.",
]


async def one_task(rw: RoutewiseClient, org: str, i: int) -> None:
    task = TaskArrived(scope=Scope(org_id=org, team_id=f"team-{i % 8}"), prompt=random.choice(PROMPTS))
    decision = await rw.submit_task(task, wait=60)
    if not isinstance(decision, ModelSelected):
        raise RuntimeError(f"task {i} not selected: {decision}")
    await rw.record_cost(
        CostRecorded(
            task_id=task.task_id,
            scope=task.scope,
            model=decision.model,
            provider=decision.provider,
            input_tokens=decision.estimated_input_tokens,
            output_tokens=decision.estimated_output_tokens,
            cost_usd=decision.estimated_cost_usd,
        ),
        trace_context={},
    )
    await rw.record_feedback(
        FeedbackRecorded(task_id=task.task_id, scope=task.scope, model=decision.model, quality=random.random())
    )


async def drive(settings: Settings, tasks: int, concurrency: int) -> float:
    org = f"growth-{uuid.uuid4().hex[:6]}"
    async with RoutewiseClient(settings) as rw:
        budget = CreateBudget(
            name="growth", scope_type="org", scope_id=org, period="monthly", limit_usd=Decimal(1_000_000), actor="bench"
        )
        await rw.request(rw.subjects.budget_create, budget, Budget)
        started = time.perf_counter()
        sem = asyncio.Semaphore(concurrency)

        async def bounded(i: int) -> None:
            async with sem:
                await one_task(rw, org, i)

        await asyncio.gather(*(bounded(i) for i in range(tasks)))
        while True:  # every cost and feedback applied by the last consumer to see them
            summary = await rw.request(rw.subjects.metrics_summary, GetMetricsSummary(org_id=org), MetricsSummary)
            if summary.costs_recorded >= tasks:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)  # the other consumers, the outboxes and the pricing sweeper settle
        return time.perf_counter() - started


async def sizes(admin_dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("ANALYZE")
        rows = await conn.fetch(
            """SELECT n.nspname AS schema, c.relname AS table, c.reltuples::bigint AS estimate,
                      pg_total_relation_size(c.oid) AS bytes
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind = 'r' AND n.nspname = ANY($1::text[]) ORDER BY 1, 2""",
            list(SERVICES),
        )
        found = []
        for r in rows:
            count = await conn.fetchval(f'SELECT count(*) FROM "{r["schema"]}"."{r["table"]}"')
            found.append({"schema": r["schema"], "table": r["table"], "rows": count, "bytes": r["bytes"]})
        return found
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with environment_servers() as env:
        settings = Settings(nats_url=env.nats_url, namespace=env.namespace)
        with in_background(settings, env.dsns):
            before = asyncio.run(sizes(env.admin_dsn))
            seconds = asyncio.run(drive(settings, args.tasks, args.concurrency))
            after = asyncio.run(sizes(env.admin_dsn))
    start = {(t["schema"], t["table"]): t for t in before}
    tables = []
    for t in after:
        base = start.get((t["schema"], t["table"]), {"rows": 0, "bytes": 0})
        rows, grown = t["rows"] - base["rows"], t["bytes"] - base["bytes"]
        tables.append(
            {
                **t,
                "rows_per_task": round(rows / args.tasks, 3),
                "bytes_per_task": round(grown / args.tasks, 1),
                "mb_per_million_tasks": round(grown / args.tasks * 1_000_000 / 1e6),
            }
        )
    tables.sort(key=lambda t: -t["bytes_per_task"])
    path = write_results("table_growth", {"tasks": args.tasks, "seconds": round(seconds, 1), "tables": tables})
    print(f"{args.tasks} tasks in {seconds:.1f} s; growth per million tasks (MB), largest first:")
    for t in tables:
        if t["bytes_per_task"] > 0:
            print(f"  {t['schema']}.{t['table']}: {t['rows_per_task']} rows/task, {t['mb_per_million_tasks']:,} MB")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
