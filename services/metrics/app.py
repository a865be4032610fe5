"""metrics: which event, request and job goes to which handler."""

from operator import attrgetter
from pathlib import Path

from routewise.contracts.events import (
    CostAdjusted,
    CostRecorded,
    FeedbackRecorded,
    ModelSelected,
    TaskArrived,
    TaskRejected,
)
from routewise.runtime.catalog import WATCH_CATALOG
from routewise.runtime.service import Service, consumer, every
from routewise.services.metrics import handlers

BY_TASK = attrgetter("task_id")
"""A batch locks its tasks' ledger rows in one order."""

SERVICE = Service(
    name="metrics",
    migrations=Path(__file__).parent / "migrations",
    deps=handlers.build,
    events={
        TaskArrived: consumer(handlers.task_arrived, batch=True, order=BY_TASK),
        ModelSelected: consumer(handlers.model_selected, batch=True, order=BY_TASK),
        TaskRejected: consumer(handlers.task_rejected, batch=True, order=BY_TASK),
        CostRecorded: consumer(handlers.cost_recorded, batch=True, order=BY_TASK),
        CostAdjusted: consumer(handlers.cost_adjusted, batch=True, order=BY_TASK),
        FeedbackRecorded: consumer(handlers.feedback_recorded, batch=True, order=BY_TASK),
    },
    requests={
        "metrics_summary": handlers.summary,
        "metrics_report": handlers.report,
    },
    jobs=[
        every(handlers.PRICE_EVERY_S, handlers.price_baselines, wake=lambda deps: deps.to_price),
        WATCH_CATALOG,
    ],
    reads_kv=["catalog_bucket"],
    retention={"parked_adjustments": "parked_at"},  # adjustments whose cost never came
)
