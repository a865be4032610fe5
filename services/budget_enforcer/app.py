"""budget-enforcer: which event, request and job goes to which handler."""

from pathlib import Path

from routewise.contracts.events import BudgetAlert, CostAdjusted, CostRecorded
from routewise.runtime.service import Service, every
from routewise.services.budget_enforcer import handlers

SERVICE = Service(
    name="budget_enforcer",
    migrations=Path(__file__).parent / "migrations",
    deps=handlers.build,
    events={
        CostRecorded: handlers.settle_cost,
        CostAdjusted: handlers.adjust_cost,
    },
    requests={
        "budget_reserve": handlers.reserve,
        "budget_release": handlers.release,
        "budget_status": handlers.status,
        "budget_create": handlers.create,
        "budget_update": handlers.update,
        "budget_delete": handlers.delete,
        "budget_show": handlers.show,
        "budget_list": handlers.list_budgets,
        "budget_approve": handlers.approve,
        "budget_extend": handlers.extend,
        "budget_alerts_list": handlers.list_alerts,
        "budget_audit_list": handlers.list_audit,
    },
    jobs=[every(handlers.sweep_interval, handlers.expire_due)],
    publishes=[BudgetAlert],
    retention={"parked_adjustments": "parked_at"},  # adjustments whose cost never came
)
