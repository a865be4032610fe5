"""The snapshot store as a JetStream KV bucket: one entry per model, newest version wins."""

from __future__ import annotations

from dataclasses import dataclass

from faststream.nats import NatsBroker
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
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


async def open_bucket(broker: NatsBroker, bucket: str) -> KvSnapshotStore:
    """The bucket, created (one revision per key) if it does not exist yet."""
    client = await broker.connect()
    js = client.jetstream()
    try:
        kv = await js.key_value(bucket)
    except BucketNotFoundError:
        kv = await js.create_key_value(KeyValueConfig(bucket=bucket, history=1))
    return KvSnapshotStore(kv)
