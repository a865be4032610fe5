"""The performance snapshots the selector routes with: a live copy of performance-tracker's KV
bucket, kept by a watcher, so no decision waits on a request for model statistics (``Mirror``
keeps cost-predictor's output profiles the same way, ``ports.LocalQuotes``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import structlog
from faststream.nats import NatsBroker
from nats.js.kv import KeyValue
from pydantic import ValidationError

from routewise.contracts.performance import PerformanceSnapshot
from routewise.contracts.subjects import snapshot_key
from routewise.runtime.bus import ensure_bucket

log = structlog.get_logger(__name__)


class SnapshotFeed(Protocol):
    """Where the snapshots come from: each ``(key, value)`` put, from the current content on
    (an empty value: the key was deleted)."""

    def watch(self) -> AsyncIterator[tuple[str, bytes | None]]: ...

    async def current(self) -> list[tuple[str, bytes | None]]:
        """The content as it is now (what the selector knows before it decides anything)."""
        ...


@dataclass(frozen=True)
class BucketFeed:
    """``SnapshotFeed`` of performance-tracker's JetStream KV bucket."""

    kv: KeyValue

    @classmethod
    async def open(cls, broker: NatsBroker, bucket: str) -> BucketFeed:
        return cls(await ensure_bucket(broker, bucket))

    async def watch(self) -> AsyncIterator[tuple[str, bytes | None]]:
        watcher = await self.kv.watchall()
        try:
            async for entry in watcher:
                if entry is not None and entry.key:
                    yield entry.key, entry.value
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    async def current(self) -> list[tuple[str, bytes | None]]:
        watcher = await self.kv.watchall()
        try:
            content: list[tuple[str, bytes | None]] = []
            async for entry in watcher:
                if entry is None:  # the watcher's mark: every key's current value was delivered
                    return content
                if entry.key:
                    content.append((entry.key, entry.value))
            return content
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]


class Mirror:
    """A live copy of a KV bucket: ``put`` takes each value; ``load`` the content as it is before the
    service decides anything, ``follow`` every put from then on."""

    def put(self, key: str, value: bytes | None) -> None:
        raise NotImplementedError

    async def load(self, feed: SnapshotFeed) -> None:
        """The feed's current content, before any decision."""
        for key, value in await feed.current():
            self.put(key, value)

    async def follow(self, feed: SnapshotFeed) -> None:
        """Apply every put of ``feed``, from its current content on, until the watch ends or
        breaks (the watch job then starts it again, from the content, so nothing is missed)."""
        async for key, value in feed.watch():
            self.put(key, value)


class Snapshots(Mirror):
    """The newest snapshot of each model. A value that does not parse is kept as an error the
    learner raises (so hybrid falls back to complexity, saying why), while the health and
    latency filters, which must keep working, go on with the model's last good snapshot."""

    def __init__(self) -> None:
        self._snapshots: dict[str, PerformanceSnapshot] = {}
        self._errors: dict[str, str] = {}
        self.demoted: frozenset[str] = frozenset()
        self.latency_p95_ms: dict[str, float] = {}

    def get(self, model: str) -> PerformanceSnapshot | None:
        """The model's snapshot; raises when its newest value is unreadable."""
        key = snapshot_key(model)
        if key in self._errors:
            raise ValueError(f"performance snapshot of {model} is unreadable: {self._errors[key]}")
        return self._snapshots.get(key)

    def put(self, key: str, value: bytes | None) -> None:
        """Take the bucket's new value for ``key`` (empty: the key was deleted)."""
        self._errors.pop(key, None)
        if not value:
            self._snapshots.pop(key, None)
        else:
            try:
                snap = PerformanceSnapshot.model_validate_json(value)
            except ValidationError as exc:
                self._errors[key] = str(exc.errors()[0]["msg"])
                log.warning("unreadable performance snapshot", key=key, error=self._errors[key])
                return
            current = self._snapshots.get(key)
            if current is not None and current.version > snap.version:
                return
            self._snapshots[key] = snap
        known = self._snapshots.values()
        self.demoted = frozenset(s.model for s in known if s.health.state == "demoted")
        self.latency_p95_ms = {
            s.model: day.latency_p95_ms
            for s in known
            if (day := s.windows.get("24h")) is not None and day.latency_p95_ms is not None
        }
