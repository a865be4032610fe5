"""The whole loop of one task: submit it, run the call, record what it cost and how good the
answer was, then read the cost back from the metrics service.

    ROUTEWISE_NATS_URL=nats://127.0.0.1:PORT uv run python examples/02_record_cost_and_feedback.py

Exits 0 when metrics counted the recorded cost, 1 otherwise.
"""

import asyncio
import sys
from uuid import uuid4

from routewise.client import (
    CostRecorded,
    CostReported,
    FeedbackRecorded,
    ModelSelected,
    RoutewiseClient,
    Scope,
    TaskArrived,
)
from routewise.contracts.cost import Price, PriceUsage
from routewise.contracts.metrics import GetMetricsSummary, MetricsSummary


async def main() -> int:
    org = f"example-{uuid4().hex[:8]}"
    async with RoutewiseClient() as rw:
        task = TaskArrived(
            scope=Scope(org_id=org, team_id="docs"),
            task_type="code",
            prompt="Write a Python function that merges two sorted lists in linear time, with a docstring.",
        )
        decision = await rw.submit_task(task, wait=10)
        if not isinstance(decision, ModelSelected):
            print(f"expected a model for task {task.task_id}, got {decision!r}")
            return 1
        print(f"task {task.task_id}: {decision.provider}/{decision.model}, estimated ${decision.estimated_cost_usd}")

        # Your application calls the provider here. Say the call used these tokens and took 1.4 s:
        input_tokens, output_tokens, latency_ms = decision.estimated_input_tokens + 40, 230, 1400.0
        # The cost is what your provider billed; here cost-predictor prices the tokens exactly.
        price = await rw.request(
            rw.subjects.cost_price,
            PriceUsage(
                model=decision.model,
                provider=decision.provider,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
            ),
            Price,
        )
        # Reported, then checked by cost-predictor against the price book: recorded (CostRecorded,
        # what budgets and metrics apply) or refused (CostRefused, with the reason). wait: its verdict.
        verdict = await rw.record_cost(
            CostReported(
                task_id=task.task_id,
                scope=task.scope,
                task_type=task.task_type,
                model=decision.model,
                provider=decision.provider,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=price.cost_usd,
                latency_ms=latency_ms,
            ),
            wait=10,
        )
        if not isinstance(verdict, CostRecorded):
            print(f"expected the cost to be recorded, got {verdict!r}")
            return 1
        print(f"recorded the call: {input_tokens} in, {output_tokens} out, ${price.cost_usd} ({price.source})")

        # Later (seconds or days), how good the answer was, 0..1: it teaches the selector's learner.
        await rw.record_feedback(
            FeedbackRecorded(
                task_id=task.task_id,
                scope=task.scope,
                model=decision.model,
                task_type=task.task_type,
                quality=0.9,
                comment="compiles, tests pass",
            )
        )
        print("recorded feedback: quality 0.9")

        # Costs are events: the metrics service applies them a moment later.
        summary = None
        for _ in range(50):
            summary = await rw.request(rw.subjects.metrics_summary, GetMetricsSummary(org_id=org), MetricsSummary)
            if summary.costs_recorded >= 1:
                break
            await asyncio.sleep(0.2)

    if summary is None or summary.costs_recorded < 1:
        print(f"metrics did not count the cost within 10 s: {summary}")
        return 1
    print(
        f"metrics for {org}: {summary.selected} selected, {summary.costs_recorded} cost(s) recorded; "
        f"actual ${summary.actual_cost_usd} vs estimated ${summary.estimated_cost_usd} "
        f"(baseline ${summary.baseline_cost_usd})"
    )
    if summary.actual_cost_usd != price.cost_usd:
        print(f"expected an actual cost of ${price.cost_usd}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
