"""Submit a task and wait for Routewise's decision: which model to call, and why.

Run against a running Routewise (`uv run routewise dev` in another terminal):

    ROUTEWISE_NATS_URL=nats://127.0.0.1:PORT uv run python examples/01_submit_and_wait.py

Exits 0 when the selector chose a model, 1 otherwise.
"""

import asyncio
import sys
from uuid import uuid4

from routewise.client import ModelSelected, RoutewiseClient, Scope, TaskArrived


async def main() -> int:
    org = f"example-{uuid4().hex[:8]}"  # a fresh org, so the example can run again and again
    async with RoutewiseClient() as rw:  # ROUTEWISE_NATS_URL and ROUTEWISE_NAMESPACE from the environment
        print(f"connected to {rw.nats_url} (namespace {rw.settings.namespace!r})")
        task = TaskArrived(
            scope=Scope(org_id=org, team_id="docs", user_id="ana"),
            task_type="normal",
            prompt="Summarize the main trade-offs between SQL and NoSQL databases for a startup.",
        )
        print(f"submitting task {task.task_id} for org {org} …")
        decision = await rw.submit_task(task, wait=10)

    if decision is None:
        print("no decision within 10 s: is the selector running?")
        return 1
    if not isinstance(decision, ModelSelected):
        print(f"rejected: {decision.reason.value}: {decision.detail}")
        return 1
    print(f"model:      {decision.provider}/{decision.model} (tier {decision.tier.value})")
    print(f"estimated:  ${decision.estimated_cost_usd}")
    print(f"baseline:   {decision.baseline_model} at ${decision.baseline_cost_usd} (what it would cost unrouted)")
    print(f"strategy:   {decision.strategy}, confidence {decision.confidence:.2f}")
    print(f"fallbacks:  {', '.join(decision.fallback_chain) or '—'}")
    print(f"max tokens: {decision.max_output_tokens or '—'} (pass it to the provider)")
    print(f"reasoning:  {decision.reasoning}")
    print("now run the call with that model, then record its cost (see 02_record_cost_and_feedback.py)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
