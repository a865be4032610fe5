"""performance-tracker: which event, request and job goes to which handler."""

from pathlib import Path

from services.performance_tracker import handlers
from shared.events import CostRecorded, FeedbackRecorded, ModelHealthChanged, ModelSelected
from shared.service import Service, every

SERVICE = Service(
    name="performance_tracker",
    migrations=Path(__file__).parent / "migrations",
    deps=handlers.build,
    events={
        ModelSelected: handlers.remember_pattern,
        CostRecorded: handlers.record_outcome,
        FeedbackRecorded: handlers.record_feedback,
    },
    requests={"performance_query": handlers.query},
    jobs=[
        every(handlers.sweep_interval, handlers.sweep_health),
        every(handlers.SNAPSHOT_EVERY_S, handlers.publish_snapshots),
        every(handlers.PRUNE_EVERY_S, handlers.prune),
    ],
    publishes=[ModelHealthChanged],
)
