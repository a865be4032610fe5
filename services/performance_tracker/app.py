"""performance-tracker: which event, request and job goes to which handler."""

from operator import attrgetter
from pathlib import Path

from routewise.contracts.events import (
    CostAdjusted,
    CostRecorded,
    FeedbackRecorded,
    ModelHealthChanged,
    ModelSelected,
)
from routewise.runtime.service import Service, consumer, every
from routewise.services.performance_tracker import handlers

BY_MODEL = attrgetter("model")
"""A batch takes its models' locks in one order (each handler locks its model first)."""

SERVICE = Service(
    name="performance_tracker",
    migrations=Path(__file__).parent / "migrations",
    deps=handlers.build,
    events={
        ModelSelected: consumer(handlers.remember_pattern, batch=True),
        CostRecorded: consumer(handlers.record_outcome, batch=True, order=BY_MODEL),
        CostAdjusted: consumer(handlers.adjust_cost, batch=True, order=BY_MODEL),
        FeedbackRecorded: consumer(handlers.record_feedback, batch=True, order=BY_MODEL),
    },
    requests={"performance_query": handlers.query},
    jobs=[
        every(handlers.sweep_interval, handlers.sweep_health),
        every(handlers.SNAPSHOT_EVERY_S, handlers.publish_snapshots),
        every(handlers.PRUNE_EVERY_S, handlers.prune_buckets),
    ],
    publishes=[ModelHealthChanged],
    writes_kv=["performance_bucket"],
    retention={
        "outcomes": "occurred_at",
        "feedback": "occurred_at",
        "task_patterns": "created_at",
        "cost_outcomes": "occurred_at",
        "parked_adjustments": "parked_at",
    },
)
