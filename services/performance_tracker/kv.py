"""The snapshot store as a JetStream KV bucket: one entry per model, newest version wins."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from routewise.contracts.performance import PerformanceSnapshot
from routewise.contracts.subjects import snapshot_key


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


@dataclass(frozen=True)
class KvSnapshotStore:
    kv: KeyValue

    async def write(self, snapshot: PerformanceSnapshot) -> bool:
        return await write_snapshot(self.kv, snapshot)
