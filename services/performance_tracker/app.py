"""performance-tracker's bus adapters: outcomes and feedback in, statistics, health changes
and per-model snapshots (a JetStream KV bucket the selector reads) out."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import structlog
from faststream.nats import NatsRouter
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.performance_tracker import repository as repo
from services.performance_tracker.domain import (
    WINDOWS,
    Health,
    HealthPolicy,
    Totals,
    Transition,
    after_cooldown,
    after_outcome,
    stats,
)
from shared.bus import reply
from shared.db import Connection, unit_of_work
from shared.events import CostRecorded, FeedbackRecorded, ModelHealthChanged, ModelSelected, utcnow
from shared.outbox import enqueue
from shared.requests import ModelHealth, Performance, PerformanceSnapshot, QueryPerformance
from shared.service import Runtime, ServiceSpec
from shared.subjects import snapshot_key

NAME = "performance_tracker"
SNAPSHOT_EVERY_S = 0.25
log = structlog.get_logger(__name__)


async def write_snapshot(kv: KeyValue, snap: PerformanceSnapshot) -> bool:
    """Put the snapshot unless the bucket already holds a newer one (compare-and-set on the
    entry's revision, so two replicas cannot put an older one over a newer one)."""
    key = snapshot_key(snap.model)
    value = snap.model_dump_json().encode()
    for _ in range(5):
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            try:
                await kv.create(key, value)
                return True
            except KeyWrongLastSequenceError:
                continue  # another replica created it first: compare with theirs
        if entry.value and PerformanceSnapshot.model_validate_json(entry.value).version >= snap.version:
            return False
        try:
            await kv.update(key, value, last=entry.revision)
            return True
        except KeyWrongLastSequenceError:
            continue
    return False


def health_view(h: Health) -> ModelHealth:
    return ModelHealth.model_validate({"state": h.state, "since": h.since, "reason": h.reason})


def register(router: NatsRouter, rt: Runtime) -> None:
    subjects = rt.subjects
    s = rt.settings
    policy = HealthPolicy(
        error_rate=s.health_error_rate,
        min_samples=s.health_min_samples,
        window=timedelta(seconds=s.health_window),
        cooldown=timedelta(seconds=s.health_cooldown),
        probation_successes=s.health_probation_successes,
    )
    dirty: set[str] = set()
    kv_holder: list[KeyValue] = []

    async def change_health(conn: Connection, model: str, before: Health, transition: Transition) -> None:
        await repo.save_health(conn, model, transition.health)
        if transition.health.state != before.state:
            await enqueue(
                conn,
                subjects.model_health_changed,
                ModelHealthChanged(
                    model=model,
                    previous=before.state,
                    state=transition.health.state,
                    reason=transition.health.reason,
                    error_rate=transition.error_rate,
                    samples=transition.samples,
                ),
            )
            log.warning(
                "model health changed",
                model=model,
                previous=before.state,
                state=transition.health.state,
                reason=transition.health.reason,
            )

    async def on_selected(conn: Connection, event: ModelSelected) -> None:
        await repo.remember_pattern(conn, event.task_id, event.pattern, event.task_type)

    async def on_cost(conn: Connection, event: CostRecorded) -> None:
        await repo.record_outcome(conn, event)  # takes the model's lock and creates its health row
        current = await repo.health(conn, event.model, lock=True)
        if event.occurred_at < current.since:
            return  # an outcome from before the last change of state says nothing about the model now
        since = max(event.occurred_at - policy.window, current.since)
        requests, successes = await repo.recent(conn, event.model, since)
        transition = after_outcome(current, policy, event.success, requests, successes, utcnow())
        if transition is not None:
            await change_health(conn, event.model, current, transition)
            rt.outbox.poke()

    async def on_feedback(conn: Connection, event: FeedbackRecorded) -> None:
        await repo.record_feedback(conn, event)

    async def sweep_forever() -> None:
        ticks = 0
        while True:
            await asyncio.sleep(min(1.0, policy.cooldown.total_seconds() / 4))
            ticks += 1
            try:
                changed: list[str] = []
                async with unit_of_work(rt.pool) as conn:
                    for model in await repo.demoted_models(conn):
                        current = await repo.health(conn, model)
                        transition = after_cooldown(current, policy, utcnow())
                        if transition is not None:
                            await change_health(conn, model, current, transition)
                            changed.append(model)
                    if ticks % 60 == 0:
                        await repo.prune(conn, utcnow())
                dirty.update(changed)  # after the commit: a snapshot now reads the new state
                rt.outbox.poke()
            except Exception:
                log.exception("health sweep failed; will retry")

    async def snapshot(model: str) -> PerformanceSnapshot:
        now = utcnow()
        # one consistent view: the statistics and the version they belong to
        async with rt.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            version = await conn.fetchval("SELECT version FROM model_health WHERE model = $1", model) or 0
            windows = {
                w: stats(model, w, (await repo.totals(conn, w, now, model=model)).get((model, ""), Totals()))  # type: ignore[arg-type]
                for w in WINDOWS
            }
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

    async def publish_snapshots_forever() -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_EVERY_S)
            if not dirty:
                continue
            models = list(dirty)
            dirty.clear()
            for model in models:
                try:
                    await write_snapshot(kv_holder[0], await snapshot(model))
                except Exception:
                    dirty.add(model)
                    log.exception("snapshot not published; will retry", model=model)

    async def started(_: Runtime) -> None:
        client = await rt.broker.connect()
        js = client.jetstream()
        try:
            kv = await js.key_value(subjects.performance_bucket)
        except BucketNotFoundError:
            kv = await js.create_key_value(KeyValueConfig(bucket=subjects.performance_bucket, history=1))
        kv_holder.append(kv)
        rt.spawn(sweep_forever(), "health-sweep")
        rt.spawn(publish_snapshots_forever(), "performance-snapshots")

    async def query(req: QueryPerformance) -> Performance:
        now = utcnow()
        dim, key = (
            ("task_type", req.task_type)
            if req.task_type
            else ("pattern", req.pattern)
            if req.pattern
            else ("model", None)
        )
        async with rt.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            found = await repo.totals(conn, req.window, now, model=req.model, dim=dim, key=key)  # one snapshot
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
        return Performance(
            stats=rows, health={m: health_view(h) for m, h in healths.items() if req.model is None or m == req.model}
        )

    rt.consume_once(router, subjects.model_selected, ModelSelected, on_selected)
    rt.consume_once(router, subjects.cost_recorded, CostRecorded, on_cost, after_commit=lambda e: dirty.add(e.model))
    rt.consume_once(
        router, subjects.feedback_recorded, FeedbackRecorded, on_feedback, after_commit=lambda e: dirty.add(e.model)
    )
    reply(router, subjects.performance_query, NAME, QueryPerformance, query)
    rt.on_startup(started)


SPEC = ServiceSpec(name=NAME, migrations=Path(__file__).parent / "migrations", register=register)
