"""The decisions of this process's tasks: one subscription to ModelSelected and TaskRejected for the
whole process, handing each to the request waiting for its task id.

Core NATS subscriptions (not a durable consumer): every gateway replica sees every decision and
keeps those it waits for; a decision nobody here waits for is dropped in microseconds.
"""

from __future__ import annotations

import asyncio
import json

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from routewise.contracts.events import ModelSelected, TaskRejected
from routewise.contracts.subjects import Subjects

log = structlog.get_logger(__name__)

Decision = ModelSelected | TaskRejected


class Decisions:
    def __init__(self, nc: NatsClient, subjects: Subjects) -> None:
        self._nc = nc
        self._subjects = subjects
        self._waiting: dict[str, asyncio.Future[Decision]] = {}
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        for subject in (self._subjects.model_selected, self._subjects.task_rejected):
            self._subs.append(await self._nc.subscribe(subject, cb=self._on_decision))

    async def stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:
                log.debug("decision subscription already closed")
        self._subs.clear()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def expect(self, task_id: str) -> asyncio.Future[Decision]:
        """A future for ``task_id``'s decision; ask before publishing the task."""
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiting[task_id] = future
        return future

    def forget(self, task_id: str) -> None:
        self._waiting.pop(task_id, None)

    async def _on_decision(self, msg: Msg) -> None:
        try:
            task_id = json.loads(msg.data).get("task_id")
        except (ValueError, AttributeError):
            return
        future = self._waiting.pop(task_id, None) if isinstance(task_id, str) else None
        if future is None or future.done():
            return
        kind: type[Decision] = ModelSelected if msg.subject == self._subjects.model_selected else TaskRejected
        try:
            future.set_result(kind.model_validate_json(msg.data))
        except ValueError as exc:
            future.set_exception(exc)
