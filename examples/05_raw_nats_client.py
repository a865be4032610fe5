"""Routewise without the SDK: any NATS client in any language will do. This one uses nats-py and
json only, to show exactly what goes over the wire.

- Every subject of an org's events ends with the org: ``<org>`` below is the task's
  ``scope.org_id`` as one subject token (letters, digits, ``-``, ``_``, ``:`` and ``@`` as they
  are, any other character as ``=`` and its code in hex: org ``a.b`` is ``a=2Eb``). An event
  on another org's subject is refused (dead-lettered with the reason ``scope_mismatch``).
- Publish TaskArrived as JSON to the JetStream subject ``<namespace>.tasks.arrived.<org>`` (the
  namespace is ``routewise`` unless ROUTEWISE_NAMESPACE says otherwise), with the event's id
  in the ``Nats-Msg-Id`` header so JetStream drops a repeated publish.
- The decision comes back on ``<namespace>.models.selected.<org>`` (ModelSelected) or
  ``<namespace>.tasks.rejected.<org>`` (TaskRejected); match it by ``task_id``. Subscribe
  before publishing.
- Then report the call's cost: CostReported (CostRecorded's fields, see docs/sdk.md) to
  ``<namespace>.costs.reported.<org>``. cost-predictor checks it against the price book and
  answers with CostRecorded on ``<namespace>.costs.recorded.<org>`` (what budgets and metrics
  apply; ``reported_event_id`` names your report) or CostRefused on
  ``<namespace>.costs.refused.<org>`` (``reason`` and ``detail``: nothing was charged). Publish
  FeedbackRecorded to ``<namespace>.feedback.recorded.<org>`` the same way.

The JSON Schemas of every event and request are in docs/asyncapi/<service>.json. Money is a
decimal string of USD ("0.000121"), timestamps are ISO 8601 with a time zone, and unknown
fields are refused (the message goes to the dead letter subject).

    ROUTEWISE_NATS_URL=nats://127.0.0.1:PORT uv run python examples/05_raw_nats_client.py

Exits 0 when a decision for the task arrived, 1 otherwise.
"""

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from uuid import uuid4

import nats
from nats.aio.msg import Msg


def subject_token(org_id: str) -> str:
    """An org id as one subject token (as Routewise writes it: ``a.b`` is ``a=2Eb``)."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_:@") else f"={ord(c):02X}" for c in org_id)


async def main() -> int:
    url = os.environ.get("ROUTEWISE_NATS_URL", "nats://127.0.0.1:4222")
    namespace = os.environ.get("ROUTEWISE_NAMESPACE", "routewise")
    nc = await nats.connect(
        url,
        user=os.environ.get("ROUTEWISE_NATS_USER"),
        password=os.environ.get("ROUTEWISE_NATS_PASSWORD"),
    )
    try:
        event_id, task_id = str(uuid4()), str(uuid4())
        org = f"example-{uuid4().hex[:8]}"
        task = {
            "event_id": event_id,
            "occurred_at": datetime.now(UTC).isoformat(),
            "schema_version": 1,
            "task_id": task_id,
            "scope": {"org_id": org, "team_id": "docs"},
            "task_type": "normal",
            "prompt": "Explain what a JetStream durable consumer is, in three sentences.",
            "constraints": {"max_cost_usd": "0.01"},
        }
        decided: asyncio.Future[tuple[str, dict[str, object]]] = asyncio.get_running_loop().create_future()

        async def on_decision(msg: Msg) -> None:
            body = json.loads(msg.data)
            if body.get("task_id") == task_id and not decided.done():
                decided.set_result((msg.subject, body))

        token = subject_token(org)
        subs = [
            await nc.subscribe(f"{namespace}.models.selected.{token}", cb=on_decision),
            await nc.subscribe(f"{namespace}.tasks.rejected.{token}", cb=on_decision),
        ]
        subject = f"{namespace}.tasks.arrived.{token}"
        ack = await nc.jetstream().publish(
            subject,
            json.dumps(task).encode(),
            headers={"Nats-Msg-Id": event_id, "content-type": "application/json"},
        )
        print(f"published TaskArrived {task_id} to {subject} (stream {ack.stream}, seq {ack.seq})")
        try:
            subject, decision = await asyncio.wait_for(decided, timeout=10)
        except TimeoutError:
            print("no decision within 10 s: is Routewise running on this namespace?")
            return 1
        finally:
            for sub in subs:
                await sub.unsubscribe()
    finally:
        await nc.drain()

    print(f"received on {subject}:")
    if subject.startswith(f"{namespace}.models.selected."):
        for key in ("model", "provider", "tier", "estimated_cost_usd", "baseline_model", "baseline_cost_usd"):
            print(f"  {key}: {decision[key]}")
        print(f"  reasoning: {decision['reasoning']}")
        return 0
    print(f"  rejected: {decision['reason']}: {decision['detail']}")
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
