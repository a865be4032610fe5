"""metrics: which event, request and job goes to which handler."""

from pathlib import Path

from services.metrics import handlers
from shared.events import CostRecorded, FeedbackRecorded, ModelSelected, TaskArrived, TaskRejected
from shared.service import Service, every

SERVICE = Service(
    name="metrics",
    migrations=Path(__file__).parent / "migrations",
    deps=handlers.build,
    events={
        TaskArrived: handlers.task_arrived,
        ModelSelected: handlers.model_selected,
        TaskRejected: handlers.task_rejected,
        CostRecorded: handlers.cost_recorded,
        FeedbackRecorded: handlers.feedback_recorded,
    },
    requests={
        "metrics_summary": handlers.summary,
        "metrics_report": handlers.report,
    },
    jobs=[every(handlers.PRICE_EVERY_S, handlers.price_baselines, wake=lambda deps: deps.to_price)],
)
