"""performance-tracker over the bus: two replicas (in the test process), real NATS and Postgres."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import nats
import pytest

from routewise.client import RoutewiseClient
from routewise.contracts.events import (
    CostRecorded,
    FeedbackRecorded,
    ModelHealthChanged,
    Scope,
    utcnow,
)
from routewise.contracts.performance import ModelStats, Performance, PerformanceSnapshot, QueryPerformance
from routewise.contracts.subjects import snapshot_key
from routewise.services.performance_tracker.domain import wilson
from tests.conftest import Database, RunningStack, in_process_stack
from tests.helpers import a_selection, an_outcome, eventually, record_trusted

SCOPE = Scope(org_id="perf")


@pytest.fixture(scope="module")
def perf_stack(nats_url: str, database: Database) -> Iterator[RunningStack]:
    health = {
        "ROUTEWISE_HEALTH_MIN_SAMPLES": "5",
        "ROUTEWISE_HEALTH_ERROR_RATE": "0.5",
        "ROUTEWISE_HEALTH_COOLDOWN": "2",
        "ROUTEWISE_HEALTH_PROBATION_SUCCESSES": "2",
    }
    with in_process_stack(nats_url, database, {"performance_tracker": 2}, extra_env=health) as stack:
        yield stack


def a_model() -> str:
    return f"test-model-{uuid.uuid4().hex[:6]}"


def outcome(model: str, **fields: Any) -> CostRecorded:
    return an_outcome(SCOPE, model, **fields)


async def query(rw: RoutewiseClient, **fields: object) -> Performance:
    return await rw.request(rw.subjects.performance_query, QueryPerformance(**fields), Performance)  # type: ignore[arg-type]


async def stats_when(rw: RoutewiseClient, model: str, requests: int, **fields: object) -> ModelStats:
    async def check() -> ModelStats | None:
        rows = (await query(rw, model=model, **fields)).stats
        return rows[0] if rows and rows[0].requests >= requests else None

    return await eventually(check, timeout=20)


async def test_stats_match_a_hand_computed_stream_and_replays_do_not_double_count(perf_stack: RunningStack) -> None:
    model = a_model()
    latencies = [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
    outputs = [50, 60, 70, 80, 90, 100, 110, 120, 0, 0]
    errors = [None] * 8 + ["timeout", "rate_limited"]
    costs = ["0.01", "0.02", "0.03", "0.04", "0.05", "0.06", "0.07", "0.08", "0.001", "0.002"]
    events = [
        outcome(model, latency=lat, output=out, cost=c, error=e)
        for lat, out, c, e in zip(latencies, outputs, costs, errors, strict=True)
    ]
    async with RoutewiseClient(perf_stack.settings) as rw:
        for event in events:
            await record_trusted(rw, event)
        first = await stats_when(rw, model, 10, window="1h")
        for i, event in enumerate(events):  # replay everything past the stream's duplicate detection
            await rw.nc.jetstream().publish(
                rw.subjects.event(event),
                event.model_dump_json().encode(),
                headers={"Nats-Msg-Id": f"replay-{i}-{event.event_id}"},
            )
        marker = outcome(model, latency=None, cost="0")
        await record_trusted(rw, marker)
        second = await stats_when(rw, model, 11, window="all")
    assert first.requests == 10
    assert first.success_rate == 0.8
    assert first.success_ci95 == wilson(8, 10)
    assert first.errors_by_type == {"rate_limited": 1, "timeout": 1}
    assert first.mean_cost_usd == Decimal("0.0363")  # 0.363 / 10
    assert first.output_tokens_per_s == pytest.approx(680 / 3.6, abs=0.01)  # successes: 680 tokens in 3.6 s
    assert first.latency_p50_ms == pytest.approx(550, rel=0.2)  # log buckets are ~19 % wide
    assert first.latency_p95_ms == pytest.approx(950, rel=0.2)
    assert second.requests == 11  # the ten replays changed nothing; the marker counted once
    assert second.success_rate == round(9 / 11, 4)
    assert second.mean_cost_usd == (Decimal("0.363") / 11).quantize(Decimal("1e-12"))


async def pattern_known(stack: RunningStack, task_id: uuid.UUID) -> None:
    """Once performance-tracker has applied the task's decision (remembered its pattern)."""
    conn = await asyncpg.connect(stack.database.admin_dsn)
    try:

        async def remembered() -> bool:
            found = await conn.fetchval("SELECT 1 FROM performance_tracker.task_patterns WHERE task_id = $1", task_id)
            return found is not None

        await eventually(remembered)
    finally:
        await conn.close()


async def test_stats_per_task_type_and_per_pattern_the_selector_saw(perf_stack: RunningStack) -> None:
    model = a_model()
    async with RoutewiseClient(perf_stack.settings) as rw:
        for pattern, task_type, ok in [("code", "fix_bug", True), ("code", "fix_bug", False), ("math", "normal", True)]:
            task_id = uuid.uuid4()
            selection = a_selection(SCOPE, model, task_id, pattern, task_type)
            await rw.publish(rw.subjects.event(selection), selection)
            await pattern_known(perf_stack, task_id)  # the decision is known before the cost, as in real life
            await record_trusted(
                rw, outcome(model, task_type=task_type, task_id=task_id, error=None if ok else "server_error")
            )
        await stats_when(rw, model, 3, window="24h")
        by_pattern = {s.pattern: s for s in (await query(rw, model=model, pattern="code", window="24h")).stats}
        by_type = {s.task_type: s for s in (await query(rw, model=model, task_type="normal", window="24h")).stats}
    assert by_pattern["code"].requests == 2
    assert by_pattern["code"].success_rate == 0.5
    assert by_type["normal"].requests == 1


async def test_a_burst_of_failures_demotes_and_later_successes_promote(perf_stack: RunningStack) -> None:
    model = a_model()
    settings = perf_stack.settings
    changes: list[ModelHealthChanged] = []
    nc = await nats.connect(settings.nats_url)

    async def on_change(msg: nats.aio.msg.Msg) -> None:
        change = ModelHealthChanged.model_validate_json(msg.data)
        if change.model == model:
            changes.append(change)

    await nc.subscribe(settings.subjects.model_health_changed, cb=on_change)
    try:
        async with RoutewiseClient(settings) as rw:
            for i in range(6):
                await record_trusted(rw, outcome(model, error="server_error" if i % 3 else None))  # 4 of 6 fail
            await eventually(lambda: asyncio.sleep(0, result=changes), timeout=15)
            assert (changes[0].previous, changes[0].state) == ("healthy", "demoted")
            assert "error rate" in changes[0].reason
            assert changes[0].samples >= 5
            health = (await query(rw, model=model)).health[model]
            assert health.state == "demoted"
            # the cool-down (2 s) puts it on probation; two successes bring it back
            await eventually(lambda: asyncio.sleep(0, result=len(changes) >= 2), timeout=15)
            assert changes[1].state == "probation"
            for _ in range(2):
                await record_trusted(rw, outcome(model))
                await asyncio.sleep(0.3)
            await eventually(lambda: asyncio.sleep(0, result=len(changes) >= 3), timeout=15)
            assert (changes[2].previous, changes[2].state) == ("probation", "healthy")
            assert (await query(rw, model=model)).health[model].state == "healthy"
    finally:
        await nc.close()


async def test_feedback_arriving_late_or_twice_updates_quality_last_one_wins(perf_stack: RunningStack) -> None:
    model = a_model()
    early, late, revised = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = utcnow()
    async with RoutewiseClient(perf_stack.settings) as rw:
        # feedback before its cost arrives: counted once the cost is known
        await rw.record_feedback(FeedbackRecorded(task_id=early, scope=SCOPE, model=model, quality=0.2))
        await asyncio.sleep(0.3)
        for task_id in (early, late, revised):
            await record_trusted(rw, outcome(model, task_id=task_id))
        await stats_when(rw, model, 3, window="all")
        await rw.record_feedback(FeedbackRecorded(task_id=late, scope=SCOPE, model=model, quality=0.9))
        await rw.record_feedback(
            FeedbackRecorded(
                task_id=revised, scope=SCOPE, model=model, quality=0.1, occurred_at=now + timedelta(seconds=1)
            )
        )
        await rw.record_feedback(
            FeedbackRecorded(
                task_id=revised, scope=SCOPE, model=model, quality=0.7, occurred_at=now + timedelta(seconds=2)
            )
        )  # replaces 0.1
        await rw.record_feedback(
            FeedbackRecorded(
                task_id=revised, scope=SCOPE, model=model, quality=0.0, occurred_at=now - timedelta(hours=1)
            )
        )  # older: ignored

        async def quality() -> ModelStats | None:
            s = (await query(rw, model=model, window="all")).stats[0]
            return s if s.quality_samples == 3 and s.mean_quality == round((0.2 + 0.9 + 0.7) / 3, 4) else None

        final = await eventually(quality, timeout=20)
    assert final.quality_ci95 is not None
    assert final.quality_ci95.low < 0.6 < final.quality_ci95.high


async def test_snapshots_reach_a_kv_watcher_within_a_second(perf_stack: RunningStack) -> None:
    model = a_model()
    settings = perf_stack.settings
    nc = await nats.connect(settings.nats_url)
    try:
        kv = await nc.jetstream().key_value(settings.subjects.performance_bucket)
        watcher = await kv.watch(snapshot_key(model))
        async with RoutewiseClient(settings) as rw:
            sent = time.monotonic()
            await record_trusted(rw, outcome(model, latency=750, cost="0.02"))
            while True:
                entry = await watcher.updates(timeout=5)
                if entry is not None and entry.value:
                    break
            lag = time.monotonic() - sent
    finally:
        await nc.close()
    snapshot = PerformanceSnapshot.model_validate_json(entry.value)
    assert lag < 1.0, f"snapshot arrived {lag:.2f} s after the outcome"
    assert snapshot.model == model
    assert snapshot.windows["1h"].requests == 1
    assert snapshot.windows["all"].mean_cost_usd == Decimal("0.02")
    assert snapshot.by_task_type["normal"].requests == 1
    assert snapshot.health.state == "healthy"


def test_the_cli_shows_a_table_and_json(perf_stack: RunningStack) -> None:
    model = a_model()

    async def record() -> None:
        async with RoutewiseClient(perf_stack.settings) as rw:
            await record_trusted(rw, outcome(model, latency=420))
            await stats_when(rw, model, 1)

    asyncio.run(record())
    shown = perf_stack.cli("performance", "--model", model, "--window", "1h")
    assert shown.returncode == 0, shown.stderr
    assert model in shown.stdout and "100%" in shown.stdout
    data = json.loads(perf_stack.cli("performance", "--model", model, "--json").stdout)
    assert data["stats"][0]["requests"] == 1
    bad = perf_stack.cli("performance", "--window", "fortnight", "--json")
    assert json.loads(bad.stdout)["error"]["code"] == "invalid_request"
    assert math.isfinite(data["stats"][0]["latency_p50_ms"])


def test_the_cli_shows_which_pattern_a_row_is_for(perf_stack: RunningStack) -> None:
    model = a_model()

    async def record() -> None:
        async with RoutewiseClient(perf_stack.settings) as rw:
            await record_trusted(rw, outcome(model))
            await stats_when(rw, model, 1)

    asyncio.run(record())
    shown = perf_stack.cli("performance", "--model", model, "--pattern", "unknown", "--window", "1h")
    assert f"{model} [unknown]" in shown.stdout  # not swallowed as rich markup


async def test_feedback_racing_its_cost_on_two_replicas_is_counted_once(perf_stack: RunningStack) -> None:
    model = a_model()
    now = utcnow()
    tasks = [uuid.uuid4() for _ in range(40)]
    async with RoutewiseClient(perf_stack.settings) as rw:
        await asyncio.gather(
            *(
                coro
                for task_id in tasks
                for coro in (
                    record_trusted(rw, outcome(model, task_id=task_id)),
                    rw.record_feedback(
                        FeedbackRecorded(task_id=task_id, scope=SCOPE, model=model, quality=0.2, occurred_at=now)
                    ),
                    rw.record_feedback(
                        FeedbackRecorded(
                            task_id=task_id,
                            scope=SCOPE,
                            model=model,
                            quality=0.6,
                            occurred_at=now + timedelta(seconds=1),
                        )
                    ),
                )
            )
        )

        async def settled() -> ModelStats | None:
            rows = (await query(rw, model=model, window="all")).stats
            return rows[0] if rows and rows[0].requests == 40 and rows[0].quality_samples == 40 else None

        await eventually(settled, timeout=30)
        await asyncio.sleep(1)  # nothing left in flight may change it
        final = (await query(rw, model=model, window="all")).stats[0]
    assert final.quality_samples == 40  # one opinion per task, never two
    assert final.mean_quality == 0.6  # the latest one
