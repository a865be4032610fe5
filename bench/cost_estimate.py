"""Benchmark: routewise.cost.estimate over NATS against a real cost-predictor process.

Requests per second and p50/p99 latency with 1, 10 and 100 alternative models per request.

    uv run python -m bench.cost_estimate [--requests 2000] [--concurrency 16] [--replicas 1]

Writes bench/results/cost_estimate.json.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import nats

from bench.common import environment, latency_summary, write_results
from routewise.contracts.catalog import default_catalog
from routewise.contracts.cost import CostEstimate, EstimateCost
from routewise.contracts.errors import RoutewiseError
from routewise.runtime.settings import Settings
from routewise.services.cost_predictor.pricing import PriceBook

PROMPT = (
    "You are reviewing a pull request that changes how invoices are rounded. Explain the risks of "
    "switching from banker's rounding to half-up for multi-currency totals, list the tests you would add, "
    "and propose a migration plan for invoices already issued. "
) * 6  # about 300 tokens


def alternatives(count: int) -> list[str]:
    """``count`` distinct models with prices: the catalog first, then other genai-prices models."""
    book = PriceBook(default_catalog())
    refs = [m.id for m in book.catalog.models]
    for provider in book._snapshot.providers:
        for info in provider.models:
            if len(refs) >= count:
                return refs[:count]
            ref = f"{provider.id}/{info.id}"
            try:
                model = book.resolve(ref)
                model.cost(1000, 100)
            except (RoutewiseError, LookupError, ValueError, TypeError, KeyError):
                continue
            if model.id not in refs:
                refs.append(model.id)
    return refs[:count]


async def run_scenario(settings: Settings, models: list[str], requests: int, concurrency: int) -> dict[str, object]:
    nc = await nats.connect(settings.nats_url)
    body = EstimateCost(prompt=PROMPT, models=models, task_type="normal").model_dump_json().encode()
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker() -> None:
        nonlocal errors
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            started = time.perf_counter()
            reply = await nc.request(settings.subjects.cost_estimate, body, timeout=30)
            latencies.append(time.perf_counter() - started)
            if b'"error"' in reply.data[:20]:
                errors += 1

    # warm up: caches, connections, JIT-free but still
    for _ in range(20):
        reply = await nc.request(settings.subjects.cost_estimate, body, timeout=30)
    estimate = CostEstimate.model_validate_json(reply.data)
    assert len(estimate.estimates) == len(models), reply.data[:200]
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await nc.close()
    return {
        "alternatives": len(models),
        "requests": requests,
        "concurrency": concurrency,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(requests / elapsed, 1),
        "model_estimates_per_s": round(requests * len(models) / elapsed, 1),
        **latency_summary(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args()
    scenarios = {n: alternatives(n) for n in (1, 10, 100)}
    assert len(scenarios[100]) == 100, "could not find 100 priced models"
    with environment({"cost_predictor": args.replicas}) as (env, _stack):
        settings = Settings(nats_url=env.nats_url, namespace=env.namespace)
        rows = []
        for count, models in scenarios.items():
            requests = args.requests if count < 100 else max(args.requests // 4, 200)
            row = asyncio.run(run_scenario(settings, models, requests, args.concurrency))
            rows.append(row)
            print(
                f"{count:>3} alternatives: {row['requests_per_s']:>7} req/s  p50 {row['p50_ms']} ms"
                f"  p99 {row['p99_ms']} ms  errors {row['errors']}"
            )
    path = write_results(
        "cost_estimate",
        {"replicas": args.replicas, "prompt_tokens_approx": 300, "scenarios": rows},
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
