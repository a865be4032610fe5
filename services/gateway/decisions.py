"""The decisions of this process's tasks: one subscription to ModelSelected and TaskRejected for the
whole process, handing each to the request waiting for its task id.

Core NATS subscriptions (not a durable consumer): every gateway replica sees every decision and
keeps those it waits for; a decision nobody here waits for is dropped in microseconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from routewise.contracts.events import ModelSelected, TaskRejected
from routewise.contracts.subjects import Subjects

log = structlog.get_logger(__name__)

Decision = ModelSelected | TaskRejected
ABANDONED_KEPT = 10_000
"""Tasks given up on that are remembered (the oldest forgotten first)."""


class Decisions:
    def __init__(
        self,
        nc: NatsClient,
        subjects: Subjects,
        *,
        on_late: Callable[[ModelSelected], Coroutine[Any, Any, None]] | None = None,
        remember_s: float = 3600.0,
    ) -> None:
        """``on_late``: told of a selection that came for a task given up on (``abandon``) within
        ``remember_s`` seconds — its hold is nobody's now."""
        self._nc = nc
        self._subjects = subjects
        self._waiting: dict[str, asyncio.Future[Decision]] = {}
        self._subs: list[Subscription] = []
        self.on_late = on_late
        self._remember_s = remember_s
        self._abandoned: OrderedDict[str, float] = OrderedDict()
        self._late: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for subject in (self._subjects.of(ModelSelected), self._subjects.of(TaskRejected)):
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

    def abandon(self, task_id: str) -> None:
        """No one waits for ``task_id`` any more (its request timed out): a selection that still
        comes for it goes to ``on_late``."""
        self.forget(task_id)
        self._abandoned[task_id] = time.monotonic() + self._remember_s
        while len(self._abandoned) > ABANDONED_KEPT:
            self._abandoned.popitem(last=False)

    async def _on_decision(self, msg: Msg) -> None:
        try:
            task_id = json.loads(msg.data).get("task_id")
        except (ValueError, AttributeError):
            return
        if not isinstance(task_id, str):
            return
        future = self._waiting.pop(task_id, None)
        if future is None and task_id in self._abandoned:
            self._late_decision(task_id, msg)
            return
        if future is None or future.done():
            return
        kind: type[Decision] = ModelSelected if self._selected(msg) else TaskRejected
        try:
            future.set_result(kind.model_validate_json(msg.data))
        except ValueError as exc:
            future.set_exception(exc)

    def _selected(self, msg: Msg) -> bool:
        return msg.subject.startswith(f"{self._subjects.model_selected}.")

    def _late_decision(self, task_id: str, msg: Msg) -> None:
        expires = self._abandoned.pop(task_id)
        if self.on_late is None or not self._selected(msg) or time.monotonic() > expires:
            return
        try:
            selected = ModelSelected.model_validate_json(msg.data)
        except ValueError:
            return
        task: asyncio.Task[None] = asyncio.create_task(self.on_late(selected), name=f"gateway-late-{task_id}")
        self._late.add(task)
        task.add_done_callback(self._late.discard)
