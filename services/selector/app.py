"""selector: which event, request and job goes to which handler."""

from operator import attrgetter
from pathlib import Path

from routewise.contracts.events import FeedbackRecorded, ModelSelected, TaskArrived, TaskRejected
from routewise.runtime.catalog import WATCH_CATALOG
from routewise.runtime.service import Service, answer, consumer, every
from routewise.services.selector import handlers

SERVICE = Service(
    name="selector",
    migrations=Path(__file__).parent / "migrations",
    deps=handlers.build,
    events={
        TaskArrived: consumer(
            handlers.decide_task_arrived,
            inbox=False,
            workers=lambda s: s.decision_workers,
            on_invalid=handlers.reject_invalid_task,
        ),
        FeedbackRecorded: consumer(handlers.learn_feedback, batch=True, order=attrgetter("model")),
    },
    requests={
        "routing_decision": handlers.get_decision,
        "routing_decide": answer(handlers.preview, workers=lambda s: s.decision_workers),
        "routing_policies_list": handlers.list_policies,
        "routing_policies_set": handlers.set_policy,
        "routing_tiers_get": handlers.get_preferences,
        "routing_tiers_set": handlers.set_preferences,
        "routing_tiers_delete": handlers.delete_preferences,
    },
    jobs=[
        every(handlers.LEARNER_REFRESH_S, handlers.refresh_learner, wake=lambda deps: deps.learner_changed),
        every(handlers.SNAPSHOT_REWATCH_S, handlers.watch_snapshots, wake=lambda deps: deps.watch_now),
        every(handlers.SNAPSHOT_REWATCH_S, handlers.watch_profiles, wake=lambda deps: deps.watch_now),
        every(handlers.ROUTING_SETTINGS_REFRESH_S, handlers.settings_changed),
        WATCH_CATALOG,
    ],
    publishes=[ModelSelected, TaskRejected],
    notices={"routing_settings_changed": handlers.settings_changed},
    asks=["budget_reserve", "budget_release", "budget_status", "routing_settings_changed"],
    reads_kv=["performance_bucket", "catalog_bucket", "profiles_bucket"],
    retention={"task_features": "created_at"},
)
