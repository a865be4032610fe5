"""Performance snapshots in a real JetStream KV bucket: the newest version always wins."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import nats

from routewise.contracts.performance import ModelHealth, PerformanceSnapshot
from routewise.contracts.subjects import snapshot_key
from routewise.runtime.settings import Settings
from routewise.services.performance_tracker.kv import write_snapshot


def snap(version: int) -> PerformanceSnapshot:
    now = datetime.now(UTC)
    return PerformanceSnapshot(
        model="gpt-4o@eu",
        health=ModelHealth(state="healthy", since=now, reason="r"),
        windows={},
        by_task_type={},
        by_pattern={},
        updated_at=now,
        version=version,
    )


async def test_an_older_snapshot_never_replaces_a_newer_one(settings: Settings) -> None:
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        kv = await js.create_key_value(bucket=settings.subjects.performance_bucket, history=1)
        assert await write_snapshot(kv, snap(5))
        assert not await write_snapshot(kv, snap(3))  # a slower replica, with older data
        assert not await write_snapshot(kv, snap(5))
        results = await asyncio.gather(*(write_snapshot(kv, snap(v)) for v in (6, 9, 7, 8)))  # racing writers
        stored = PerformanceSnapshot.model_validate_json((await kv.get(snapshot_key("gpt-4o@eu"))).value)
        await js.delete_key_value(settings.subjects.performance_bucket)
    finally:
        await nc.close()
    assert stored.version == 9
    assert results[1] is True
    assert snapshot_key("gpt-4o@eu") == "model.gpt-4o=40eu"  # characters KV keys refuse are escaped
