"""performance-tracker's service layer: outcomes and feedback in; statistics, health changes and
per-model snapshots (which the selector reads) out.

Plain functions: each takes its event, request or turn of a job and the service's dependencies;
none knows NATS. ``app.py`` maps subjects to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

import structlog

from routewise.contracts.events import (
    CostAdjusted,
    CostRecorded,
    FeedbackRecorded,
    ModelHealthChanged,
    ModelSelected,
)
from routewise.contracts.performance import ModelHealth, ModelStats, Performance, PerformanceSnapshot, QueryPerformance
from routewise.contracts.vocabulary import Window
from routewise.runtime.bus import ensure_bucket
from routewise.runtime.db import Connection
from routewise.runtime.service import Deps, Runtime, UnitOfWork
from routewise.runtime.settings import Settings
from routewise.services.performance_tracker import repository as repo
from routewise.services.performance_tracker.domain import (
    WINDOWS,
    Health,
    HealthPolicy,
    Totals,
    Transition,
    after_cooldown,
    after_outcome,
    stats,
)
from routewise.services.performance_tracker.kv import KvSnapshotStore
from routewise.services.performance_tracker.store import SnapshotStore

SNAPSHOT_EVERY_S = 0.25
PRUNE_EVERY_S = 60.0
log = structlog.get_logger(__name__)


def health_policy(settings: Settings) -> HealthPolicy:
    return HealthPolicy(
        error_rate=settings.health_error_rate,
        min_samples=settings.health_min_samples,
        window=timedelta(seconds=settings.health_window),
        cooldown=timedelta(seconds=settings.health_cooldown),
        probation_successes=settings.health_probation_successes,
    )


@dataclass(kw_only=True)
class PerformanceDeps(Deps):
    store: SnapshotStore
    """Where snapshots go (the KV bucket the selector reads)."""
    dirty: set[str] = field(default_factory=set)
    """Models whose statistics or health changed since their last snapshot."""
    policy: HealthPolicy = field(init=False)

    def __post_init__(self) -> None:
        self.policy = health_policy(self.settings)


async def build(rt: Runtime) -> PerformanceDeps:
    store = KvSnapshotStore(await ensure_bucket(rt.broker, rt.subjects.performance_bucket))
    return PerformanceDeps(**rt.base_deps(), store=store)


def sweep_interval(settings: Settings) -> float:
    """A demoted model goes on probation at most a quarter of its cool-down late."""
    return min(1.0, settings.health_cooldown / 4)


def health_view(h: Health) -> ModelHealth:
    return ModelHealth.model_validate({"state": h.state, "since": h.since, "reason": h.reason})


async def change_health(
    uow: UnitOfWork, deps: PerformanceDeps, model: str, before: Health, transition: Transition
) -> None:
    """Save the model's new health; a change of state is published (through the outbox)."""
    after = transition.health
    await repo.save_health(uow.conn, model, after)
    if after.state == before.state:
        return
    change = ModelHealthChanged(
        model=model,
        previous=before.state,
        state=after.state,
        reason=after.reason,
        error_rate=transition.error_rate,
        samples=transition.samples,
    )
    await uow.publish(deps.subjects.model_health_changed, change)
    log.warning("model health changed", model=model, previous=before.state, state=after.state, reason=after.reason)


# --- events ---------------------------------------------------------------------------------


async def remember_pattern(event: ModelSelected, uow: UnitOfWork, deps: PerformanceDeps) -> None:
    """The pattern the selector saw for a task, for the per-pattern statistics of its outcome."""
    await repo.remember_pattern(uow.conn, event.task_id, event.pattern, event.task_type)


async def record_outcome(event: CostRecorded, uow: UnitOfWork, deps: PerformanceDeps) -> None:
    """Count the call in the model's statistics, and change its health when the call tips it."""
    if event.cached:
        return  # a gateway cache hit: the model was not called
    await repo.record_outcome(uow.conn, event)  # takes the model's lock and creates its health row
    uow.after_commit(lambda: deps.dirty.add(event.model))
    current = await repo.health(uow.conn, event.model, lock=True)
    if event.occurred_at < current.since:
        return  # an outcome from before the last change of state says nothing about the model now
    since = max(event.occurred_at - deps.policy.window, current.since)
    requests, successes = await repo.recent(uow.conn, event.model, since)
    transition = after_outcome(current, deps.policy, event.success, requests, successes, deps.clock())
    if transition is not None:
        await change_health(uow, deps, event.model, current, transition)


async def adjust_cost(event: CostAdjusted, uow: UnitOfWork, deps: PerformanceDeps) -> None:
    """A corrected or voided cost: the model's cost statistics follow it (its health does not: the
    call succeeded or failed as it did)."""
    await repo.adjust_cost(uow.conn, event)
    uow.after_commit(lambda: deps.dirty.add(event.model))


async def record_feedback(event: FeedbackRecorded, uow: UnitOfWork, deps: PerformanceDeps) -> None:
    """A quality opinion on a task's call; the latest one per task counts."""
    await repo.record_feedback(uow.conn, event)
    uow.after_commit(lambda: deps.dirty.add(event.model))


# --- requests -------------------------------------------------------------------------------


async def query(req: QueryPerformance, deps: PerformanceDeps) -> Performance:
    """Statistics per model over a window, broken down by task type or pattern when asked, and
    every model's health."""
    now = deps.clock()
    dim, key = (
        ("task_type", req.task_type) if req.task_type else ("pattern", req.pattern) if req.pattern else ("model", None)
    )
    async with deps.snapshot() as conn:  # statistics and health from one moment
        found = await repo.totals(conn, req.window, now, model=req.model, dim=dim, key=key)
        healths = await repo.all_health(conn)
    rows = [
        stats(
            model,
            req.window,
            t,
            task_type=k if dim == "task_type" else None,
            pattern=k if dim == "pattern" else None,
        )
        for (model, k), t in sorted(found.items())
    ]
    health = {m: health_view(h) for m, h in healths.items() if req.model is None or m == req.model}
    return Performance(stats=rows, health=health)


# --- jobs -----------------------------------------------------------------------------------


async def sweep_health(deps: PerformanceDeps) -> list[str]:
    """Put the demoted models whose cool-down is over on probation; returns which."""
    changed: list[str] = []
    async with deps.transaction() as uow:
        for model in await repo.demoted_models(uow.conn):
            current = await repo.health(uow.conn, model)
            transition = after_cooldown(current, deps.policy, deps.clock())
            if transition is not None:
                await change_health(uow, deps, model, current, transition)
                changed.append(model)
        uow.after_commit(lambda: deps.dirty.update(changed))  # a snapshot then reads the new state
    return changed


async def prune_buckets(deps: PerformanceDeps) -> None:
    """Drop the minute and hour buckets no window reads any more."""
    async with deps.transaction() as uow:
        await repo.prune(uow.conn, deps.clock())


async def _window_stats(conn: Connection, model: str, window: Window, now: datetime) -> ModelStats:
    found = await repo.totals(conn, window, now, model=model)
    return stats(model, window, found.get((model, ""), Totals()))


async def model_snapshot(deps: PerformanceDeps, model: str) -> PerformanceSnapshot:
    """What the selector reads about one model: its statistics per window, task type and pattern,
    its health, and the version they belong to."""
    now = deps.clock()
    async with deps.snapshot() as conn:  # one consistent view: the statistics and their version
        version = await repo.version(conn, model)
        windows = {w: await _window_stats(conn, model, cast(Window, w), now) for w in WINDOWS}
        by_type = {
            k: stats(model, "all", t, task_type=k)
            for (_, k), t in (await repo.totals(conn, "all", now, model=model, dim="task_type")).items()
        }
        by_pattern = {
            k: stats(model, "all", t, pattern=k)
            for (_, k), t in (await repo.totals(conn, "all", now, model=model, dim="pattern")).items()
        }
        current = await repo.health(conn, model)
    return PerformanceSnapshot(
        model=model,
        health=health_view(current),
        windows=windows,
        by_task_type=by_type,
        by_pattern=by_pattern,
        updated_at=now,
        version=version,
    )


async def publish_snapshots(deps: PerformanceDeps) -> list[str]:
    """A fresh snapshot of every dirty model to the store; a model that fails stays dirty for the
    next turn. Returns the models whose snapshot was stored."""
    models = sorted(deps.dirty)
    deps.dirty.clear()
    stored: list[str] = []
    for model in models:
        try:
            if await deps.store.write(await model_snapshot(deps, model)):
                stored.append(model)
        except Exception:
            deps.dirty.add(model)
            log.exception("snapshot not published; will retry", model=model)
    return stored
