"""cost-predictor: which event, request, notice and job goes to which handler."""

from operator import attrgetter
from pathlib import Path

from routewise.contracts.events import CostAdjusted, CostRecorded, CostRefused, CostReported, ModelSelected
from routewise.runtime.service import Service, consumer, every
from routewise.services.cost_predictor import handlers

SERVICE = Service(
    name="cost_predictor",
    migrations=Path(__file__).parent / "migrations",
    deps=handlers.build,
    events={
        # a report may wait for its task's decision: its own transaction, several at once
        CostReported: consumer(handlers.check_reported_cost, inbox=False, workers=lambda _: handlers.REPORT_WORKERS),
        CostRecorded: consumer(handlers.learn_cost, batch=True, order=attrgetter("task_type", "model")),
        ModelSelected: consumer(handlers.learn_decision, batch=True, order=attrgetter("task_id")),
    },
    requests={
        "cost_estimate": handlers.estimate,
        "cost_price": handlers.price_usage,
        "cost_compare_tiers": handlers.tiers,
        "cost_prices_set": handlers.set_price,
        "cost_prices_remove": handlers.remove_price,
        "cost_prices_list": handlers.list_prices,
        "cost_accuracy": handlers.estimate_accuracy,
        "cost_adjust": handlers.adjust_cost,
        "cost_adjustments_list": handlers.list_adjustments,
        "cost_models_register": handlers.register_model,
        "cost_models_list": handlers.list_models,
        "cost_models_remove": handlers.remove_model,
    },
    notices={"cost_prices_changed": handlers.reload_prices},
    jobs=[
        every(handlers.RELOAD_EVERY_S, handlers.reload_prices),
        every(handlers.PROFILES_EVERY_S, handlers.publish_profiles),
    ],
    publishes=[CostRecorded, CostRefused, CostAdjusted],
    retention={"estimates": "created_at", "decisions": "decided_at"},
    asks=["budget_status", "cost_prices_changed"],
    writes_kv=["catalog_bucket", "profiles_bucket"],
)
