"""performance-tracker's request/reply contracts and the per-model snapshots it publishes.

A reply is either the model asked for or ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, model_validator

from routewise.contracts.events import (
    Contract,
    TaskType,
    Usd,
)
from routewise.contracts.fields import (
    ModelId,
)
from routewise.contracts.vocabulary import (
    HealthState,
    Window,
)


class QueryPerformance(Contract):
    model: ModelId | None = None
    task_type: TaskType | None = None
    pattern: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    window: Window = "24h"

    @model_validator(mode="after")
    def _one_breakdown(self) -> QueryPerformance:
        if self.task_type and self.pattern:
            raise ValueError("filter by task_type or by pattern, not both")
        return self


class Interval(Contract):
    low: float
    high: float


class ModelStats(Contract):
    """What a model delivered over a window (for one task type or pattern, or overall)."""

    model: str
    task_type: str | None = None
    pattern: str | None = None
    window: Window
    requests: int
    success_rate: float | None
    success_ci95: Interval | None
    """Wilson score interval."""
    error_rate: float | None
    errors_by_type: dict[str, int]
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    output_tokens_per_s: float | None
    mean_cost_usd: Usd | None
    mean_quality: float | None
    quality_samples: int
    quality_ci95: Interval | None


class ModelHealth(Contract):
    state: HealthState
    since: datetime
    reason: str


class Performance(Contract):
    stats: list[ModelStats]
    health: dict[str, ModelHealth]


class PerformanceSnapshot(Contract):
    """What the selector reads per model from the KV bucket, without a request per task."""

    model: str
    health: ModelHealth
    windows: dict[str, ModelStats]
    by_task_type: dict[str, ModelStats]
    by_pattern: dict[str, ModelStats]
    updated_at: datetime
    version: int = 0
    """Grows with every change to the model's statistics or health: a newer snapshot is never
    replaced by an older one."""
