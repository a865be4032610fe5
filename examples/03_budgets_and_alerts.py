"""A hard monthly budget, a cost that crosses its 50 % threshold, and the BudgetAlert it raises.

    ROUTEWISE_NATS_URL=nats://127.0.0.1:PORT uv run python examples/03_budgets_and_alerts.py

Exits 0 when the 50 % alert arrived, 1 otherwise.
"""

import asyncio
import sys
from decimal import Decimal
from uuid import uuid4

from routewise.client import CostRecorded, ModelSelected, RoutewiseClient, Scope, TaskArrived
from routewise.contracts.budget import Budget, BudgetStatus, CreateBudget, GetBudgetStatus
from routewise.contracts.events import BudgetAlert


async def main() -> int:
    org = f"example-{uuid4().hex[:8]}"
    async with RoutewiseClient() as rw:
        # $0.01 a month, hard: no reservation may take spend + holds past the limit. Without
        # thresholds it gets the defaults: 50 % notify; 80 % notify + restrict-models (nothing
        # above the versatile tier); 95 % notify + require-approval; 100 % block.
        budget = await rw.request(
            rw.subjects.budget_create,
            CreateBudget(
                name=f"monthly {org}",
                scope_type="org",
                scope_id=org,
                period="monthly",
                limit_usd=Decimal("0.01"),
                mode="hard",
                timezone="Europe/Paris",
                actor="examples/03_budgets_and_alerts.py",
            ),
            Budget,
        )
        print(f"created budget {budget.id}: ${budget.limit_usd} {budget.period} ({budget.mode}) on org {org}")

        # Alerts of one scope travel on <namespace>.budgets.alerts.<scope_type>.<scope_id>: listen
        # with the client's NATS connection before the cost that crosses a threshold is recorded.
        subject = rw.subjects.budget_alert("org", org)
        sub = await rw.nc.subscribe(subject)
        print(f"listening on {subject}")

        task = TaskArrived(scope=Scope(org_id=org), prompt="Draft a two-paragraph product update for our customers.")
        decision = await rw.submit_task(task, wait=10)
        if not isinstance(decision, ModelSelected):
            print(f"expected a model for task {task.task_id}, got {decision!r}")
            return 1
        print(f"task {task.task_id}: {decision.model}, estimated ${decision.estimated_cost_usd} (its p90 is held)")

        # The call was long: the provider billed $0.006, 60 % of the month's limit.
        await rw.record_cost(
            CostRecorded(
                task_id=task.task_id,
                scope=task.scope,
                model=decision.model,
                provider=decision.provider,
                input_tokens=12_000,
                output_tokens=3_500,
                cost_usd=Decimal("0.006"),
                latency_ms=5200.0,
            )
        )
        print("recorded a cost of $0.006")

        try:
            msg = await sub.next_msg(timeout=10)
        except TimeoutError:
            print("no BudgetAlert within 10 s")
            return 1
        finally:
            await sub.unsubscribe()
        alert = BudgetAlert.model_validate_json(msg.data)
        print(
            f"alert: {alert.budget_name!r} reached {alert.threshold_percent} % "
            f"(${alert.spent_usd} of ${alert.limit_usd}, {alert.percent} %): {', '.join(alert.actions)}"
        )

        status = await rw.request(
            rw.subjects.budget_status, GetBudgetStatus(scope_type="org", scope_id=org), BudgetStatus
        )
    for view in status.budgets:
        print(
            f"status: {view.name}: spent ${view.current_spend_usd}, held ${view.reserved_usd}, "
            f"{view.percent_used} % used, {view.status}"
        )
    r = status.cost_restrictions
    print(
        f"restrictions in force: max tier {r.max_tier.value if r.max_tier else 'none'}, "
        f"approval required: {r.approval_required}, blocked: {r.block_non_essential}"
    )
    return 0 if alert.threshold_percent == 50 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
