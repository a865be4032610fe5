"""Where per-model performance snapshots go (the selector reads them): a port, so the service
layer knows no KV bucket, and an in-memory twin for tests."""

from __future__ import annotations

from typing import Protocol

from routewise.contracts.performance import PerformanceSnapshot


class SnapshotStore(Protocol):
    async def write(self, snapshot: PerformanceSnapshot) -> bool:
        """Store ``snapshot`` unless the store already holds the same or a newer version of its
        model's; whether it was stored."""
        ...


class MemorySnapshotStore:
    """The store in a dict, with the same newest-version-wins rule as the KV bucket."""

    def __init__(self) -> None:
        self.snapshots: dict[str, PerformanceSnapshot] = {}

    async def write(self, snapshot: PerformanceSnapshot) -> bool:
        held = self.snapshots.get(snapshot.model)
        if held is not None and held.version >= snapshot.version:
            return False
        self.snapshots[snapshot.model] = snapshot
        return True
