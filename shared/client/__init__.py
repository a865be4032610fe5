"""The client SDK: what an application uses to talk to Routewise over NATS.

    from routewise.client import RoutewiseClient, Scope, TaskArrived

    async with RoutewiseClient(nats_url="nats://127.0.0.1:4222") as rw:
        outcome = await rw.submit_task(TaskArrived(scope=Scope(org_id="acme"), prompt="..."), wait=10)
        ...run the call with outcome.model...
        verdict = await rw.record_cost(CostReported(...), wait=5)  # CostRecorded, or CostRefused and why

Without ``settings`` or ``nats_url`` it finds Routewise as the CLI does: ``ROUTEWISE_NATS_URL``,
else a running ``routewise dev``, else ``nats://127.0.0.1:4222`` (``routewise.client.discovery``).
The contract types an application needs are importable from here too.

Each task is one trace: ``submit_task`` starts the root span and sends its context with
TaskArrived; ``record_cost`` continues it under the selector's decision span, so the cost and
everything it triggers (settlement, budget alerts, performance, metrics) belong to the task.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from types import TracebackType
from typing import TypeVar
from uuid import UUID

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from opentelemetry import propagate, trace
from pydantic import BaseModel

from routewise.client.discovery import resolve_settings
from routewise.client.urls import url_without_password
from routewise.client.wire import msg_id_headers, parse_reply, request_errors
from routewise.contracts.errors import RemoteError
from routewise.contracts.events import (
    Constraints,
    CostRecorded,
    CostRefusal,
    CostRefused,
    CostReported,
    Event,
    FeedbackRecorded,
    ModelSelected,
    Scope,
    TaskArrived,
    TaskRejected,
)
from routewise.contracts.routing import Decision, GetDecision
from routewise.contracts.vocabulary import ErrorCode
from routewise.runtime.settings import Settings

Res = TypeVar("Res", bound=BaseModel)


_DENIED = re.compile(r'permissions violation for publish to "([^"]+)"', re.IGNORECASE)


log = structlog.get_logger(__name__)
TRACES_KEPT = 10_000
"""Decisions whose trace context a client keeps (from ``submit_task``) for the costs that follow."""
TRACE_LOOKUP_TIMEOUT_S = 2.0
"""How long ``record_cost`` waits for the decision's trace context before publishing without it."""


def as_reported(cost: CostReported | CostRecorded) -> CostReported:
    """What an application reports: a CostRecorded it built becomes the CostReported of the same
    call, with the same id (its ``self_priced`` and ``reported_event_id`` are cost-predictor's to set)."""
    if isinstance(cost, CostReported):
        return cost
    if cost.self_priced or cost.reported_event_id is not None:
        raise ValueError("self_priced and reported_event_id are set by cost-predictor, not by an application")
    return CostReported.model_validate(cost.model_dump(exclude={"self_priced", "reported_event_id"}))


class RoutewiseClient:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        nats_url: str | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ):
        """``settings``: default, from ``ROUTEWISE_*`` variables; ``nats_url`` overrides its URL.
        ``tracer_provider``: where the task's root span and the cost's span go (default: the global one)."""
        self.settings = settings or resolve_settings(nats_url)
        self.nats_url = nats_url or self.settings.nats_url
        self.subjects = self.settings.subjects
        self._nc: NatsClient | None = None
        self._tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("routewise.client")
        self._traces: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._denied: set[str] = set()

    async def __aenter__(self) -> RoutewiseClient:
        try:
            self._nc = await nats.connect(
                self.nats_url,
                user=self.settings.nats_user,
                password=self.settings.nats_password,
                inbox_prefix=self.settings.nats_inbox_prefix,
                name="routewise-client",
                connect_timeout=3,
                max_reconnect_attempts=1,  # (0 would mean: retry for ever)
                allow_reconnect=False,
                error_cb=self._on_error,  # failures surface as RemoteError, not as logged tracebacks
            )
        except (OSError, nats.errors.NoServersError, TimeoutError) as exc:
            raise RemoteError(
                f"cannot reach NATS at {url_without_password(self.nats_url)}: {exc}", code=ErrorCode.unavailable
            ) from exc
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._nc is not None:
            await self._nc.drain()
            self._nc = None

    @property
    def nc(self) -> NatsClient:
        if self._nc is None:
            raise RuntimeError("use RoutewiseClient as an async context manager")
        return self._nc

    async def publish(self, subject: str, event: Event) -> None:
        """Publish an event to JetStream, waiting for the stream's ack (with trace context)."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        try:
            await self.nc.jetstream().publish(
                subject,
                event.model_dump_json().encode(),
                headers=msg_id_headers(event, carrier),
                timeout=self.settings.request_timeout,
            )
        except nats.js.errors.NoStreamResponseError as exc:
            raise RemoteError(
                f"no Routewise stream stores {subject} on {url_without_password(self.nats_url)}; is Routewise running"
                f" (namespace {self.settings.namespace!r})?",
                code=ErrorCode.unavailable,
            ) from exc
        except TimeoutError as exc:
            self._raise_if_denied(subject, exc)
            raise RemoteError(f"JetStream did not confirm {subject} in time", code=ErrorCode.timeout) from exc

    async def submit_task(self, task: TaskArrived, *, wait: float | None = None) -> ModelSelected | TaskRejected | None:
        """Publish TaskArrived; with ``wait``, return the decision (None if none came in time)."""
        with self._tracer.start_as_current_span("routewise.task", kind=trace.SpanKind.PRODUCER) as span:
            span.set_attribute("routewise.task_id", str(task.task_id))
            if wait is None:
                await self.publish(self.subjects.event(task), task)
                return None
            loop = asyncio.get_running_loop()
            decided: asyncio.Future[ModelSelected | TaskRejected] = loop.create_future()
            wanted = str(task.task_id)

            async def on_decision(msg: Msg) -> None:
                if decided.done():
                    return
                try:
                    if json.loads(msg.data).get("task_id") != wanted:
                        return
                    kind = ModelSelected if msg.subject == selected else TaskRejected
                    decided.set_result(kind.model_validate_json(msg.data))
                    self._remember_trace(wanted, msg.headers)
                except (ValueError, AttributeError) as exc:
                    decided.set_exception(exc)

            org = task.scope.org_id
            selected = self.subjects.for_org("model_selected", org)
            subs = [
                await self.nc.subscribe(s, cb=on_decision)
                for s in (selected, self.subjects.for_org("task_rejected", org))
            ]
            try:
                await self.publish(self.subjects.event(task), task)
                try:
                    return await asyncio.wait_for(decided, timeout=wait)
                except TimeoutError:
                    return None
            finally:
                for sub in subs:
                    await sub.unsubscribe()

    async def record_cost(
        self,
        cost: CostReported | CostRecorded,
        *,
        trace_context: Mapping[str, str] | None = None,
        wait: float | None = None,
    ) -> CostRecorded | CostRefused | None:
        """Report what a call really cost, inside its task's trace.

        The cost is published as CostReported: cost-predictor checks it against the price book and
        publishes CostRecorded (what budgets, metrics and statistics apply) or CostRefused, with
        the reason (``unknown_model``, ``implausible_cost``). With ``wait``, that verdict is
        returned (None if none came in time). A CostRecorded given is reported as it is (same id).

        The cost's span is a child of the selector's decision span: ``trace_context`` is the
        decision's (``Decision.trace_context``); without it the selector is asked for it (one
        request). A cost is never lost for tracing: if the decision cannot be fetched within
        ``TRACE_LOOKUP_TIMEOUT_S``, the cost is published in a trace of its own.
        """
        report = as_reported(cost)
        if trace_context is None:
            trace_context = await self._decision_trace(report.task_id)
        parent = propagate.extract(dict(trace_context))
        with self._tracer.start_as_current_span("routewise.cost", context=parent, kind=trace.SpanKind.PRODUCER) as span:
            span.set_attribute("routewise.task_id", str(report.task_id))
            span.set_attribute("routewise.model", report.model)
            if wait is None:
                await self.publish(self.subjects.event(report), report)
                return None
            loop = asyncio.get_running_loop()
            verdict: asyncio.Future[CostRecorded | CostRefused] = loop.create_future()
            wanted = str(report.event_id)
            org = report.scope.org_id
            recorded = self.subjects.for_org("cost_recorded", org)

            async def on_verdict(msg: Msg) -> None:
                if verdict.done():
                    return
                try:
                    if json.loads(msg.data).get("reported_event_id") != wanted:
                        return
                    kind = CostRecorded if msg.subject == recorded else CostRefused
                    verdict.set_result(kind.model_validate_json(msg.data))
                except (ValueError, AttributeError) as exc:
                    verdict.set_exception(exc)

            subs = [
                await self.nc.subscribe(s, cb=on_verdict)
                for s in (recorded, self.subjects.for_org("cost_refused", org))
            ]
            try:
                await self.publish(self.subjects.event(report), report)
                try:
                    return await asyncio.wait_for(verdict, timeout=wait)
                except TimeoutError:
                    return None
            finally:
                for sub in subs:
                    await sub.unsubscribe()

    def _remember_trace(self, task_id: str, headers: Mapping[str, str] | None) -> None:
        """The decision's trace context, as it came with the decision: its cost joins that trace
        without asking the selector (which a tenant's bus user may not)."""
        carried = {k: v for k, v in (headers or {}).items() if k in ("traceparent", "tracestate")}
        if carried:
            self._traces[task_id] = carried
            while len(self._traces) > TRACES_KEPT:
                self._traces.popitem(last=False)

    async def _decision_trace(self, task_id: UUID) -> Mapping[str, str]:
        if (carried := self._traces.get(str(task_id))) is not None:
            return carried
        try:
            decision = await self.request(
                self.subjects.routing_decision,
                GetDecision(task_id=task_id),
                Decision,
                timeout=min(self.settings.request_timeout, TRACE_LOOKUP_TIMEOUT_S),
            )
        except RemoteError as exc:
            log.warning("cost recorded outside its task's trace", task_id=str(task_id), error=exc.code)
            return {}
        return decision.trace_context

    async def record_feedback(self, feedback: FeedbackRecorded) -> None:
        await self.publish(self.subjects.event(feedback), feedback)

    async def request(
        self, subject: str, payload: BaseModel, reply_type: type[Res], *, timeout: float | None = None
    ) -> Res:
        """Ask a service; its error reply raises RemoteError with the service's code."""
        timeout = timeout or self.settings.request_timeout
        try:
            with request_errors(subject, timeout):
                msg = await self.nc.request(subject, payload.model_dump_json().encode(), timeout=timeout)
        except RemoteError as exc:
            self._raise_if_denied(subject, exc)
            raise
        return parse_reply(msg.data, reply_type)

    async def _on_error(self, exc: Exception) -> None:
        """The server refused a publish or a subscription to this user: remembered, so that what
        waited for it in vain says why (``forbidden``) instead of "no answer in time"."""
        if match := _DENIED.search(str(exc)):
            self._denied.add(match.group(1).lower())

    def _raise_if_denied(self, subject: str, cause: Exception) -> None:
        if subject.lower() in self._denied:
            who = self.settings.nats_user or "this connection"
            raise RemoteError(
                f"the NATS user {who} may not send {subject}: an org's applications may publish only their"
                " org's tasks, costs and feedback (ask the operator, or use the gateway's API with a key)",
                code=ErrorCode.forbidden,
            ) from cause


__all__ = [
    "Constraints",
    "CostRecorded",
    "CostRefusal",
    "CostRefused",
    "CostReported",
    "FeedbackRecorded",
    "ModelSelected",
    "RemoteError",
    "RoutewiseClient",
    "Scope",
    "Settings",
    "TaskArrived",
    "TaskRejected",
]
