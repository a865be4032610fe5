"""performance-tracker's handlers called directly: real Postgres, no bus, an injected clock and
the in-memory snapshot store."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from routewise.contracts.events import CostRecorded, FeedbackRecorded, ModelHealthChanged, ModelSelected, Scope
from routewise.contracts.performance import ModelStats, QueryPerformance
from routewise.runtime.settings import Settings
from routewise.services.performance_tracker import handlers
from routewise.services.performance_tracker.handlers import PerformanceDeps
from routewise.services.performance_tracker.store import MemorySnapshotStore
from tests.helpers import Clock, a_selection, an_outcome

SCOPE = Scope(org_id="perf")


@pytest.fixture
async def deps(service_pool: Callable[[str], Awaitable[asyncpg.Pool]], settings: Settings) -> PerformanceDeps:
    pool = await service_pool("performance_tracker")
    policy = {
        "health_min_samples": 4,
        "health_error_rate": 0.5,
        "health_cooldown": 30,
        "health_probation_successes": 2,
    }
    return PerformanceDeps(
        pool=pool,
        settings=settings.model_copy(update=policy),
        clock=Clock(datetime.now(UTC).replace(microsecond=0)),
        store=MemorySnapshotStore(),
    )


def clock_of(deps: PerformanceDeps) -> Clock:
    assert isinstance(deps.clock, Clock)
    return deps.clock


def a_model() -> str:
    return f"model-{uuid.uuid4().hex[:8]}"


def outcome(deps: PerformanceDeps, model: str, **fields: Any) -> CostRecorded:
    """A call of ``model`` at the deps' clock."""
    return an_outcome(SCOPE, model, at=deps.clock(), **fields)


async def record(deps: PerformanceDeps, *events: CostRecorded | FeedbackRecorded | ModelSelected) -> None:
    """Apply each event in its own transaction, as the runtime does."""
    for event in events:
        async with deps.transaction() as uow:
            if isinstance(event, CostRecorded):
                await handlers.record_outcome(event, uow, deps)
            elif isinstance(event, FeedbackRecorded):
                await handlers.record_feedback(event, uow, deps)
            else:
                await handlers.remember_pattern(event, uow, deps)


async def stats_of(deps: PerformanceDeps, model: str, window: str = "1h") -> ModelStats:
    rows = (await handlers.query(QueryPerformance.model_validate({"model": model, "window": window}), deps)).stats
    assert len(rows) == 1
    return rows[0]


async def health_changes(deps: PerformanceDeps, model: str) -> list[ModelHealthChanged]:
    """What the outbox will publish about ``model``'s health, in order."""
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT payload FROM outbox WHERE subject = $1 ORDER BY id", deps.subjects.model_health_changed
        )
    changes = [ModelHealthChanged.model_validate_json(r["payload"]) for r in rows]
    return [c for c in changes if c.model == model]


async def test_outcomes_are_counted_per_model_with_success_rate_latency_and_cost(deps: PerformanceDeps) -> None:
    model, other = a_model(), a_model()

    await record(
        deps,
        outcome(deps, model, latency=200, cost="0.01"),
        outcome(deps, model, latency=400, cost="0.02"),
        outcome(deps, model, latency=600, cost="0.03"),
        outcome(deps, model, error="timeout", latency=None, cost="0.002"),
        outcome(deps, other),
    )

    mine = await stats_of(deps, model)
    theirs = await stats_of(deps, other)
    assert mine.requests == 4
    assert mine.success_rate == 0.75 and mine.error_rate == 0.25
    assert mine.errors_by_type == {"timeout": 1}
    assert mine.latency_p50_ms == pytest.approx(400, rel=0.2)  # log buckets are ~19 % wide
    assert mine.output_tokens_per_s == pytest.approx(300 / 1.2, abs=0.01)  # 300 tokens in 1.2 s of successes
    assert mine.mean_cost_usd == Decimal("0.0155")  # 0.062 / 4
    assert theirs.requests == 1 and theirs.success_rate == 1.0


async def test_feedback_is_averaged_early_feedback_counts_and_the_latest_opinion_wins(deps: PerformanceDeps) -> None:
    model = a_model()
    early, late, revised = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = deps.clock()

    def feedback(task_id: uuid.UUID, quality: float, at: datetime) -> FeedbackRecorded:
        return FeedbackRecorded(task_id=task_id, scope=SCOPE, model=model, quality=quality, occurred_at=at)

    await record(deps, feedback(early, 0.2, now))  # before its cost: counted once the cost is known
    await record(deps, *(outcome(deps, model, task_id=task) for task in (early, late, revised)))
    await record(
        deps,
        feedback(late, 0.9, now),
        feedback(revised, 0.1, now + timedelta(seconds=1)),
        feedback(revised, 0.7, now + timedelta(seconds=2)),  # replaces 0.1
        feedback(revised, 0.0, now - timedelta(hours=1)),  # older: ignored
    )

    found = await stats_of(deps, model, "all")
    assert found.quality_samples == 3
    assert found.mean_quality == round((0.2 + 0.9 + 0.7) / 3, 4)
    assert found.quality_ci95 is not None and found.quality_ci95.low < 0.6 < found.quality_ci95.high


async def test_failures_demote_a_model_the_cooldown_puts_it_on_probation_and_successes_promote_it(
    deps: PerformanceDeps,
) -> None:
    model = a_model()
    clock = clock_of(deps)

    await record(deps, *(outcome(deps, model, error="server_error") for _ in range(3)))
    assert await health_changes(deps, model) == []  # three outcomes: fewer than the four needed
    await record(deps, outcome(deps, model, error="server_error"))

    demoted = await health_changes(deps, model)
    assert [(c.previous, c.state) for c in demoted] == [("healthy", "demoted")]
    assert "error rate 100%" in demoted[0].reason and demoted[0].samples == 4
    performance = await handlers.query(QueryPerformance(model=model), deps)
    assert performance.health[model].state == "demoted"

    assert model not in await handlers.sweep_health(deps)  # the cool-down is not over yet
    clock.now += timedelta(seconds=30)
    assert model in await handlers.sweep_health(deps)
    assert model in deps.dirty  # its snapshot will show the new state
    assert (await handlers.query(QueryPerformance(model=model), deps)).health[model].state == "probation"

    await record(deps, outcome(deps, model), outcome(deps, model))

    changes = [(c.previous, c.state) for c in await health_changes(deps, model)]
    assert changes == [("healthy", "demoted"), ("demoted", "probation"), ("probation", "healthy")]
    assert (await handlers.query(QueryPerformance(model=model), deps)).health[model].state == "healthy"


async def test_a_failure_on_probation_demotes_again(deps: PerformanceDeps) -> None:
    model = a_model()
    clock = clock_of(deps)
    await record(deps, *(outcome(deps, model, error="server_error") for _ in range(4)))
    clock.now += timedelta(seconds=30)
    await handlers.sweep_health(deps)

    await record(deps, outcome(deps, model, error="timeout"))

    changes = await health_changes(deps, model)
    assert [c.state for c in changes] == ["demoted", "probation", "demoted"]
    assert changes[-1].reason == "failed again on probation"


async def test_the_snapshot_job_writes_a_new_version_for_dirty_models_only(deps: PerformanceDeps) -> None:
    model, quiet = a_model(), a_model()
    store = deps.store
    assert isinstance(store, MemorySnapshotStore)
    await record(deps, outcome(deps, quiet))
    await handlers.publish_snapshots(deps)
    quiet_version = store.snapshots[quiet].version

    await record(deps, outcome(deps, model, latency=750, cost="0.02"))
    assert deps.dirty == {model}
    assert await handlers.publish_snapshots(deps) == [model]
    first = store.snapshots[model]
    assert await handlers.publish_snapshots(deps) == []  # nothing changed since

    await record(deps, outcome(deps, model, error="timeout", task_type="fix_bug"))
    assert await handlers.publish_snapshots(deps) == [model]
    second = store.snapshots[model]

    assert first.windows["1h"].requests == 1 and first.windows["all"].mean_cost_usd == Decimal("0.02")
    assert first.by_task_type["normal"].requests == 1 and first.health.state == "healthy"
    assert second.version > first.version > 0
    assert second.windows["all"].requests == 2 and second.by_task_type["fix_bug"].errors_by_type == {"timeout": 1}
    assert store.snapshots[quiet].version == quiet_version  # not rewritten
    assert not deps.dirty


async def test_a_snapshot_that_cannot_be_written_stays_dirty(deps: PerformanceDeps) -> None:
    model = a_model()

    class Broken:
        async def write(self, snapshot: object) -> bool:
            raise ConnectionError("bucket unavailable")

    deps.store = Broken()
    await record(deps, outcome(deps, model))

    assert await handlers.publish_snapshots(deps) == []
    assert model in deps.dirty


async def test_the_query_answers_per_task_type_and_per_pattern(deps: PerformanceDeps) -> None:
    model = a_model()
    for pattern, task_type, ok in [("code", "fix_bug", True), ("code", "fix_bug", False), ("math", "normal", True)]:
        task_id = uuid.uuid4()
        await record(
            deps,
            a_selection(SCOPE, model, task_id, pattern, task_type),  # the decision is known before the cost
            outcome(deps, model, task_type=task_type, task_id=task_id, error=None if ok else "server_error"),
        )
    await record(deps, outcome(deps, model, task_type="normal"))  # no decision seen: pattern unknown

    by_pattern = await handlers.query(QueryPerformance(model=model, pattern="code", window="24h"), deps)
    by_type = await handlers.query(QueryPerformance(model=model, task_type="normal", window="24h"), deps)
    unknown = await handlers.query(QueryPerformance(model=model, pattern="unknown", window="24h"), deps)

    assert [(s.pattern, s.task_type, s.requests, s.success_rate) for s in by_pattern.stats] == [("code", None, 2, 0.5)]
    assert [(s.task_type, s.pattern, s.requests) for s in by_type.stats] == [("normal", None, 2)]
    assert [s.requests for s in unknown.stats] == [1]
    assert by_type.health[model].state == "healthy" and set(by_type.health) == {model}


async def test_pruning_drops_old_minute_buckets_but_keeps_all_time_totals(deps: PerformanceDeps) -> None:
    model = a_model()
    clock = clock_of(deps)
    await record(deps, outcome(deps, model))

    clock.now += timedelta(hours=3)
    await handlers.prune_buckets(deps)

    async with deps.pool.acquire() as conn:
        minutes = await conn.fetchval(
            "SELECT count(*) FROM stat_buckets WHERE model = $1 AND granularity = 'minute'", model
        )
    assert minutes == 0
    assert (await stats_of(deps, model, "all")).requests == 1
    assert (await stats_of(deps, model, "24h")).requests == 1
