"""How a batch consumer settles what it fetched (``Batches``): a batch that holds a message
delivered before is applied one event at a time, each acked as soon as it is applied, so that a
message that killed the last delivery comes back alone and its neighbours keep their deliveries.
(Over the bus, with Postgres, the same consumers are tested in tests/system/test_batches.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from routewise.contracts.events import Scope
from routewise.runtime.bus import _BATCH, Batches, DeadLetters, Delivered
from routewise.runtime.settings import Settings
from tests.helpers import a_cost


@dataclass
class Raw:
    """What ``Batches`` uses of a JetStream message: its settlement."""

    settled: list[str] = field(default_factory=list)
    subject: str = "routewise.costs.recorded.acme"

    async def ack(self) -> None:
        self.settled.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.settled.append("nak")


def delivered(times: int) -> Delivered:
    meta = SimpleNamespace(num_delivered=times)
    return Delivered(Raw(), meta, a_cost(Scope(org_id="acme"), "0.01", task_id=uuid.uuid4()))  # type: ignore[arg-type]


async def handled(batch: list[Delivered], fails: set[int]) -> list[list[int]]:
    """Which events each ``apply`` call got (by position); ``fails``: positions whose apply raises."""
    calls: list[list[int]] = []

    async def apply(part: Sequence[Delivered]) -> None:
        positions = [batch.index(d) for d in part]
        calls.append(positions)
        if fails & set(positions):
            raise ConnectionResetError("Postgres went away")

    settings = Settings(namespace=f"t{uuid.uuid4().hex[:8]}", max_deliver=5)
    batches: Any = Batches(type(batch[0].event), settings.subjects, apply, DeadLetters(settings, "metrics"))
    _BATCH.set(tuple(batch))
    await batches.handle()
    return calls


async def test_a_first_delivery_is_applied_whole_and_left_to_the_consumer_to_ack() -> None:
    batch = [delivered(1) for _ in range(3)]
    assert await handled(batch, fails=set()) == [[0, 1, 2]]
    assert all(d.raw.settled == [] for d in batch)  # FastStream acks the batch after the handler


async def test_a_batch_with_a_message_delivered_before_goes_one_at_a_time_each_acked() -> None:
    batch = [delivered(1), delivered(2), delivered(1)]
    assert await handled(batch, fails=set()) == [[0], [1], [2]]
    assert [d.raw.settled for d in batch] == [["ack"], ["ack"], ["ack"]]


async def test_a_failing_batch_retries_only_the_event_that_fails() -> None:
    batch = [delivered(1) for _ in range(3)]
    assert await handled(batch, fails={1}) == [[0, 1, 2], [0], [1], [2]]
    assert [d.raw.settled for d in batch] == [["ack"], ["nak"], ["ack"]]
