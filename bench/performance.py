"""Benchmark: performance-tracker over NATS against real processes.

- outcomes (CostRecorded) ingested per second, until every one is counted (totals checked);
- snapshot lag: from publishing an outcome to its model's snapshot arriving in the KV bucket,
  idle and while the ingestion load runs.

    uv run python -m bench.performance [--outcomes 5000] [--models 20] [--lag-samples 40] [--replicas 1]

Writes bench/results/performance.json.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from decimal import Decimal

from bench.common import environment, latency_summary, publish_all, write_results
from routewise.client import RoutewiseClient
from routewise.contracts.events import CostRecorded, Scope
from routewise.contracts.performance import Performance, PerformanceSnapshot, QueryPerformance
from routewise.contracts.subjects import snapshot_key
from routewise.runtime.settings import Settings

SCOPE = Scope(org_id="bench")


def outcome(model: str, rng: random.Random) -> CostRecorded:
    failed = rng.random() < 0.05
    return CostRecorded(
        task_id=uuid.uuid4(),
        scope=SCOPE,
        task_type=rng.choice(["normal", "code", "simple_query"]),
        model=model,
        provider="bench",
        input_tokens=500,
        output_tokens=rng.randint(50, 800),
        cost_usd=Decimal(f"{rng.uniform(0.0001, 0.01):.6f}"),
        latency_ms=rng.uniform(200, 4000),
        success=not failed,
        error_type="server_error" if failed else None,
    )


async def snapshot_lag(rw: RoutewiseClient, settings: Settings, samples: int) -> list[float]:
    kv = await rw.nc.jetstream().key_value(settings.subjects.performance_bucket)
    model = f"lag-{uuid.uuid4().hex[:6]}"
    watcher = await kv.watch(snapshot_key(model))
    rng = random.Random(2)
    lags = []
    for i in range(samples):
        sent = time.perf_counter()
        cost = outcome(model, rng)
        await rw.publish(rw.subjects.event(cost), cost)  # no decision: no trace to join
        while True:  # wait for the snapshot that counts this outcome
            entry = await watcher.updates(timeout=10)
            if entry is not None and entry.value:
                snap = PerformanceSnapshot.model_validate_json(entry.value)
                if snap.windows["all"].requests >= i + 1:
                    break
        lags.append(time.perf_counter() - sent)
    return lags


async def run(settings: Settings, count: int, models: int, samples: int) -> dict[str, object]:
    names = [f"bench-{uuid.uuid4().hex[:4]}-{i}" for i in range(models)]
    rng = random.Random(1)
    events = [outcome(rng.choice(names), rng) for _ in range(count)]
    async with RoutewiseClient(settings) as rw:
        idle = await snapshot_lag(rw, settings, samples)
        js = rw.nc.jetstream()
        started = time.perf_counter()

        publishing = asyncio.create_task(publish_all(js, settings.subjects, list(events)))
        await asyncio.sleep(0.5)
        loaded = await snapshot_lag(rw, settings, max(samples // 2, 5))
        await publishing
        while True:
            perf = await rw.request(rw.subjects.performance_query, QueryPerformance(window="1h"), Performance)
            counted = sum(s.requests for s in perf.stats if s.model in names)
            if counted >= count:
                break
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - started
    assert counted == count, (counted, count)
    return {
        "outcomes": count,
        "models": models,
        "seconds_until_all_counted": round(elapsed, 3),
        "outcomes_per_s": round(count / elapsed, 1),
        "counted": counted,
        "exact": counted == count,
        "snapshot_lag_idle": latency_summary(idle),
        "snapshot_lag_under_load": latency_summary(loaded),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outcomes", type=int, default=5000)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--lag-samples", type=int, default=40)
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args()
    with environment({"performance_tracker": args.replicas}) as (env, _stack):
        settings = Settings(nats_url=env.nats_url, namespace=env.namespace, request_timeout=30)
        result = asyncio.run(run(settings, args.outcomes, args.models, args.lag_samples))
    idle, loaded = result["snapshot_lag_idle"], result["snapshot_lag_under_load"]
    print(f"outcomes: {result['outcomes_per_s']}/s counted exactly: {result['exact']}")
    print(
        f"snapshot lag idle: p50 {idle['p50_ms']} ms p99 {idle['p99_ms']} ms;"  # type: ignore[index]
        f" under load: p50 {loaded['p50_ms']} ms p99 {loaded['p99_ms']} ms"
    )  # type: ignore[index]
    name = "performance" if args.replicas == 1 else f"performance-{args.replicas}-replicas"
    print(f"results: {write_results(name, {'replicas': args.replicas, **result})}")


if __name__ == "__main__":
    main()
