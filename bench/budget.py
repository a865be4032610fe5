"""Benchmark: budget-enforcer over NATS against real processes.

- reservations per second and p50/p99 latency, each request holding on three budgets
  (user → team → org), with the totals held checked exactly at the end;
- CostRecorded ingested per second (published to JetStream, applied exactly once), with the
  spend on every budget checked exactly at the end.

    uv run python -m bench.budget [--reservations 3000] [--costs 5000] [--concurrency 32] [--replicas 1]

Writes bench/results/budget.json (budget-N-replicas.json with --replicas N).
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
from routewise.contracts.budget import (
    Budget,
    BudgetStatus,
    CreateBudget,
    GetBudgetStatus,
    Reservation,
    ReserveBudget,
    ThresholdSpec,
)
from routewise.contracts.events import CostRecorded, Scope
from routewise.runtime.settings import Settings

TEAMS, USERS_PER_TEAM = 4, 5


async def setup(rw: RoutewiseClient, org: str) -> list[Scope]:
    only_limit = [ThresholdSpec(percent=100, actions=["notify"])]
    scopes = []
    specs = [("org", org)]
    for t in range(TEAMS):
        team = f"{org}-t{t}"
        specs.append(("team", f"{org}/{team}"))
        for u in range(USERS_PER_TEAM):
            user = f"{team}-u{u}"
            specs.append(("user", f"{org}/{user}"))
            scopes.append(Scope(org_id=org, team_id=team, user_id=user))
    for kind, ident in specs:
        await rw.request(
            rw.subjects.budget_create,
            CreateBudget(
                name=f"{kind} {ident}",
                scope_type=kind,
                scope_id=ident,
                period="monthly",
                limit_usd=Decimal(1_000_000),
                thresholds=only_limit,
                actor="bench",
            ),
            Budget,
        )
    return scopes


async def reservations(settings: Settings, count: int, concurrency: int) -> dict[str, object]:
    org = f"bench-{uuid.uuid4().hex[:6]}"
    async with RoutewiseClient(settings) as rw:
        scopes = await setup(rw, org)
        rng = random.Random(5)
        work = [(rng.choice(scopes), Decimal(f"{rng.uniform(0.001, 0.05):.6f}")) for _ in range(count)]
        latencies: list[float] = []
        admitted = Decimal(0)
        queue: asyncio.Queue[tuple[Scope, Decimal]] = asyncio.Queue()
        for item in work:
            queue.put_nowait(item)

        async def worker() -> None:
            nonlocal admitted
            while not queue.empty():
                scope, amount = queue.get_nowait()
                started = time.perf_counter()
                result = await rw.request(
                    rw.subjects.budget_reserve,
                    ReserveBudget(task_id=uuid.uuid4(), scope=scope, amount_usd=amount, model="gpt-4o"),
                    Reservation,
                    timeout=30,
                )
                latencies.append(time.perf_counter() - started)
                assert result.admitted, result.detail
                admitted += amount

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        status = await rw.request(
            rw.subjects.budget_status, GetBudgetStatus(scope_type="org", scope_id=org), BudgetStatus
        )
    held = status.budgets[0].reserved_usd
    assert held == admitted, f"org holds {held}, reservations admitted {admitted}"
    return {
        "reservations": count,
        "concurrency": concurrency,
        "budgets_per_reservation": 3,
        "seconds": round(elapsed, 3),
        "reservations_per_s": round(count / elapsed, 1),
        "held_usd": str(held),
        "admitted_usd": str(admitted),
        "exact": held == admitted,
        **latency_summary(latencies),
    }


async def ingestion(settings: Settings, count: int) -> dict[str, object]:
    org = f"bench-{uuid.uuid4().hex[:6]}"
    async with RoutewiseClient(settings) as rw:
        scopes = await setup(rw, org)
        rng = random.Random(9)
        costs = [
            CostRecorded(
                task_id=uuid.uuid4(),
                scope=rng.choice(scopes),
                model="gpt-4o",
                provider="openai",
                input_tokens=500,
                output_tokens=200,
                cost_usd=Decimal(f"{rng.uniform(0.0001, 0.01):.6f}"),
            )
            for _ in range(count)
        ]
        total = sum((c.cost_usd for c in costs), Decimal(0))
        started = time.perf_counter()
        js = rw.nc.jetstream()
        await publish_all(js, settings.subjects, costs)
        published = time.perf_counter() - started
        while True:
            status = await rw.request(
                rw.subjects.budget_status, GetBudgetStatus(scope_type="org", scope_id=org), BudgetStatus
            )
            if status.costs_recorded >= count:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    spent = status.budgets[0].current_spend_usd
    assert (spent, status.costs_recorded) == (total, count), (spent, total, status.costs_recorded)
    return {
        "costs": count,
        "budgets_per_cost": 3,
        "publish_seconds": round(published, 3),
        "seconds_until_all_applied": round(elapsed, 3),
        "costs_per_s": round(count / elapsed, 1),
        "spent_usd": str(spent),
        "expected_usd": str(total),
        "exact": spent == total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reservations", type=int, default=3000)
    parser.add_argument("--costs", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args()
    with environment({"budget_enforcer": args.replicas}) as (env, _stack):
        settings = Settings(nats_url=env.nats_url, namespace=env.namespace, request_timeout=30)
        reserve = asyncio.run(reservations(settings, args.reservations, args.concurrency))
        print(
            f"reservations: {reserve['reservations_per_s']}/s  p50 {reserve['p50_ms']} ms  p99 {reserve['p99_ms']} ms"
            f"  exact totals: {reserve['exact']}"
        )
        ingest = asyncio.run(ingestion(settings, args.costs))
        print(f"CostRecorded: {ingest['costs_per_s']}/s applied  exact totals: {ingest['exact']}")
    name = "budget" if args.replicas == 1 else f"budget-{args.replicas}-replicas"
    path = write_results(name, {"replicas": args.replicas, "reservations": reserve, "ingestion": ingest})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
