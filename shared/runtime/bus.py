"""NATS JetStream plumbing shared by every service.

- ``ensure_streams`` (``routewise.runtime.streams``): the streams (tasks, events, alerts, dead
  letters), each with its retention, created or updated.
- ``DeadLetterMiddleware``: bounded redelivery with backoff, then the original message on a
  dead-letter subject with the reason; malformed messages go there at once.
- ``consume``: a durable pull consumer that validates the event, binds log context, and
  hands the event to a plain handler function; ``consume_batches`` (``Batches``): the same a
  batch at a time, for the bookkeeping consumers (``DeadLetters`` settles each message alone).
- ``reply``: a request/reply handler that validates the request and always answers, with
  the result or a structured error (never a crash or a timeout).
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar, cast
from uuid import UUID

import nats.errors
import nats.js.errors
import structlog
from faststream import AckPolicy, BaseMiddleware
from faststream.exceptions import HandlerException
from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsMessage, NatsRouter, PullSub
from faststream.nats.message import NatsBatchMessage
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from routewise.client.deadletters import (  # the dead letters' headers, defined once for their readers too
    HEADER_DELIVERIES,
    HEADER_ERROR,
    HEADER_MSG_ID,
    HEADER_REASON,
    HEADER_REDACTED,
    HEADER_SERVICE,
    HEADER_STREAM_SEQ,
    HEADER_SUBJECT,
)
from routewise.client.wire import event_id_of, parse_reply, request_errors
from routewise.contracts.errors import ErrorInfo, ErrorReply, PermanentError, RoutewiseError
from routewise.contracts.events import Event
from routewise.contracts.subjects import Subjects, durable, subject_token
from routewise.runtime.redaction import redact_error, redact_task
from routewise.runtime.settings import Settings

log = structlog.get_logger(__name__)

E = TypeVar("E", bound=Event)
Req = TypeVar("Req", bound=BaseModel)
Res = TypeVar("Res", bound=BaseModel)
C = TypeVar("C", bound=BaseModel)


async def ensure_bucket(broker: NatsBroker, bucket: str) -> KeyValue:
    """A JetStream KV bucket (one revision per key), created if it does not exist yet: whichever
    of its writer and its readers starts first."""
    js = (await broker.connect()).jetstream()
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        return await js.create_key_value(KeyValueConfig(bucket=bucket, history=1))


class InvalidMessage(PermanentError):
    """The message on the bus is not a valid event of the expected type."""

    code = "invalid_message"


class WrongOrg(PermanentError):
    """An event of one org came on another org's subject (a tenant's bus user may publish only on
    its own org's): it is dead-lettered, never applied."""

    code = "scope_mismatch"


def _js_metadata(msg: Msg) -> Any | None:
    try:
        return msg.metadata
    except nats.errors.NotJSMessageError:
        return None


@dataclass(frozen=True)
class DeadLetters:
    """What happens to a JetStream message whose handling failed, for one service: a permanent
    error, or its last allowed delivery, publishes the original message with the reason to
    ``<ns>.deadletter.<service>`` and terminates it; any other failure is nak'ed with the configured
    backoff. If the dead letter cannot be written, the message is kept (nak'ed with backoff):
    nothing is dropped silently. Used by the ``DeadLetterMiddleware`` (one message per handler
    call) and by batch consumers (each message of a batch on its own)."""

    settings: Settings
    service: str
    written: Counter | None = None
    """``routewise_dead_letters_total{service,reason}``, counted once a dead letter is written."""

    async def failed(self, raw: Msg, meta: Any, exc: BaseException) -> None:
        if isinstance(exc, PermanentError):
            await self.settle(raw, meta, exc.code, exc)
        elif int(meta.num_delivered) >= self.settings.max_deliver:
            await self.settle(raw, meta, "max_deliver_exceeded", exc)
        else:
            await self.retry(raw, meta, exc)

    async def overdue(self, raw: Msg, meta: Any) -> bool:
        """A message delivered again after its last allowed delivery (the consumer crashed or timed
        out on it) is dead-lettered without being handled: a poison message cannot crash-loop a service."""
        if int(meta.num_delivered) <= self.settings.max_deliver:
            return False
        error = RuntimeError("earlier deliveries ended without a result (the consumer crashed or timed out)")
        await self.settle(raw, meta, "max_deliver_exceeded", error)
        return True

    async def retry(self, raw: Msg, meta: Any, exc: BaseException) -> None:
        deliveries = int(meta.num_delivered)
        delay = self.settings.backoff_for(deliveries)
        log.warning(
            "message failed, will retry", subject=raw.subject, deliveries=deliveries, retry_in_s=delay, error=repr(exc)
        )
        await raw.nak(delay=delay)

    async def settle(self, raw: Msg, meta: Any, reason: str, exc: BaseException) -> None:
        """Dead-letter and terminate; if the dead letter cannot be written, keep the message."""
        try:
            await self._dead_letter(raw, meta, reason, exc)
        except Exception as publish_error:
            log.error("could not write the dead letter; keeping the message", error=repr(publish_error))
            await self.retry(raw, meta, exc)
            return
        await raw.term()

    async def _dead_letter(self, raw: Msg, meta: Any, reason: str, exc: BaseException) -> None:
        settings, service = self.settings, self.service
        deliveries = int(meta.num_delivered)
        headers = {k: v for k, v in (raw.headers or {}).items() if k != "Nats-Msg-Id"}
        # kept for a replay: the consumers name an event without event_id by its Nats-Msg-Id
        if original_id := (raw.headers or {}).get("Nats-Msg-Id"):
            headers[HEADER_MSG_ID] = original_id
        stream_seq = str(meta.sequence.stream)
        data, error = raw.data, "".join(traceback.format_exception_only(exc)).strip()
        if settings.redact_prompts and raw.subject.startswith(
            f"{settings.subjects.task_arrived}."
        ):  # see routewise.runtime.redaction
            data, error = redact_task(data), redact_error(error)
            headers[HEADER_REDACTED] = "prompt"
        headers.update(
            {
                HEADER_REASON: reason,
                HEADER_ERROR: error[:4000],
                HEADER_SUBJECT: raw.subject,
                HEADER_DELIVERIES: str(deliveries),
                HEADER_SERVICE: service,
                HEADER_STREAM_SEQ: stream_seq,
                # one dead letter per (service, stream message), even if this runs twice
                "Nats-Msg-Id": f"dlq-{service}-{meta.stream}-{stream_seq}",
            }
        )
        client: NatsClient = raw._client
        await client.jetstream().publish(settings.subjects.dead_letter(service), data, headers=headers)
        if self.written is not None:
            self.written.labels(service=service, reason=reason).inc()
        log.error("message dead-lettered", reason=reason, subject=raw.subject, deliveries=deliveries, error=error[:500])


class DeadLetterMiddleware(BaseMiddleware):
    """Decides what happens to a JetStream message whose handler raised (``DeadLetters``).

    Payloads that are not their contract (``contract_decoder``) are dead-lettered at once. A core
    NATS request whose payload is not its contract is answered with ``invalid_request``. A batch
    (a list of messages) passes through: its consumer settles each message itself.
    """

    letters: DeadLetters

    @classmethod
    def configured(cls, letters: DeadLetters) -> type[DeadLetterMiddleware]:
        """A subclass bound to one service's dead letters (broker middlewares are classes)."""
        return type("ConfiguredDeadLetterMiddleware", (cls,), {"letters": letters})

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: Any) -> Any:
        if isinstance(self.msg, list):
            return await call_next(msg)
        raw = cast(Msg, self.msg)
        meta = _js_metadata(raw)
        if meta is not None and await self.letters.overdue(raw, meta):
            return None
        token = _DELIVERY.set((raw, meta))
        try:
            return await call_next(msg)
        finally:
            _DELIVERY.reset(token)

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        if exc_val is None or isinstance(exc_val, HandlerException) or not isinstance(exc_val, Exception):
            return False
        if isinstance(self.msg, list):
            return False
        raw = cast(Msg, self.msg)
        meta = _js_metadata(raw)
        if meta is None:  # a request: one that is not its contract is answered, never left without a reply
            if isinstance(exc_val, InvalidMessage) and raw.reply:
                details = dict(exc_val.details)
                answer = error_reply("invalid_request", details.pop("message", exc_val.message), details)
                await raw.respond(json.dumps(answer).encode())
                return True
            return False
        await self.letters.failed(raw, meta, exc_val)
        return True


_DELIVERY: ContextVar[tuple[Msg, Any] | None] = ContextVar("routewise_delivery", default=None)
"""The JetStream message (and its metadata) the running handler was given, if any."""


def stored_at() -> datetime:
    """When the message being handled reached its stream (now, outside a JetStream delivery):
    a wait bounded from there ends at the same moment on every redelivery and replica."""
    delivery = _DELIVERY.get()
    stamp = getattr(delivery[1], "timestamp", None) if delivery else None
    return stamp if isinstance(stamp, datetime) else datetime.now(UTC)


async def still_working() -> None:
    """Tell JetStream the message being handled is still in hand (its ack wait starts again), so a
    handler that waits, e.g. for a service it needs, is not redelivered meanwhile."""
    delivery = _DELIVERY.get()
    if delivery is not None and delivery[1] is not None:
        await delivery[0].in_progress()


OnInvalid = Callable[[bytes, str], Awaitable[None]]
"""Told of a payload that is not its contract, with why (the validation message), before it is
dead-lettered: to answer its sender when the sender can be read from it."""


def contract_decoder(
    contract: type[BaseModel], on_invalid: OnInvalid | None = None, subjects: Subjects | None = None
) -> Callable[[NatsMessage], Awaitable[BaseModel]]:
    """A FastStream decoder that validates the raw JSON as ``contract`` (pydantic's JSON mode, once):
    the typed subscriber then receives the instance as it is. A payload that is not the contract
    raises InvalidMessage, which the DeadLetterMiddleware dead-letters (events) or answers
    (requests); a bug inside a handler that builds an invalid model is not that, and is retried.
    With ``subjects``, an event whose org is not the one its subject names raises WrongOrg."""

    async def decode(msg: NatsMessage) -> BaseModel:
        return await decoded(contract, msg.raw_message, on_invalid, subjects)

    return decode


async def decoded(
    contract: type[C], raw: Msg, on_invalid: OnInvalid | None = None, subjects: Subjects | None = None
) -> C:
    """``raw``'s payload as ``contract`` (see ``contract_decoder``)."""
    try:
        event = contract.model_validate_json(raw.data)
    except Exception as exc:  # validation is pure: whatever it raises, the payload is not the contract
        problem = _validation_message(exc)
        if on_invalid is not None:
            try:
                await on_invalid(raw.data, problem)
            except Exception:
                log.exception("could not answer an invalid message; it is dead-lettered all the same")
        raise InvalidMessage(
            f"not a valid {contract.__name__}: {exc}",
            details={"message": problem, **_validation_details(exc)},
        ) from exc
    if subjects is not None:
        _check_org(subjects, event, raw.subject)
    if isinstance(event, Event) and "event_id" not in event.model_fields_set:
        return event.model_copy(update={"event_id": _id_from_header(contract.__name__, raw.headers)})
    return event


def _check_org(subjects: Subjects, event: BaseModel, subject: str) -> None:
    token = subjects.org_token(type(event), subject)
    if token is None:
        return
    org: str = event.scope_id.partition("/")[0] if hasattr(event, "scope_id") else event.scope.org_id  # type: ignore[attr-defined]
    if token != subject_token(org):
        raise WrongOrg(f"a {type(event).__name__} of org {org!r} came on {subject!r}, another org's subject")


def _id_from_header(contract: str, headers: Mapping[str, str] | None) -> UUID:
    """The id of an event whose payload has none: from its ``Nats-Msg-Id``. Without either it could
    not be applied once."""
    msg_id = (headers or {}).get("Nats-Msg-Id", "").strip()
    if not msg_id:
        raise InvalidMessage(f"a {contract} needs its event_id: in the payload, or as the Nats-Msg-Id header")
    return event_id_of(msg_id)


def consume(
    router: NatsRouter,
    settings: Settings,
    service: str,
    subject: str,
    event_type: type[E],
    handler: Callable[[E], Awaitable[None]],
    *,
    batch_size: int = 16,
    workers: int = 1,
    on_invalid: OnInvalid | None = None,
) -> None:
    """Register a durable pull consumer of ``subject`` that calls ``handler(event)``.

    The subscriber is typed with the contract, so the service's AsyncAPI documents its payload;
    a payload that is not a valid ``event_type`` goes straight to the dead letter
    (``contract_decoder``). Ack after success; on failure the middleware decides
    between retry and dead letter. Two replicas share the durable and split the messages. With
    ``workers`` > 1, that many messages are handled at once (for handlers that mostly wait on
    the network).
    """

    async def _consumer(event: Event) -> None:
        with event_context(event):
            await handler(cast(E, event))

    _consumer.__annotations__ = {"event": event_type, "return": None}
    _consumer.__name__ = _consumer.__qualname__ = event_type.__name__
    durable_subscriber(
        router,
        settings,
        service,
        subject,
        event_type,
        pull_sub=PullSub(batch_size=batch_size, timeout=1.0),
        max_workers=workers,
        decoder=contract_decoder(event_type, on_invalid, settings.subjects),
    )(_consumer)


def event_context(event: Event) -> AbstractContextManager[None]:
    """The log context while one event is applied: its id, type and task (when it has one)."""
    task_id = getattr(event, "task_id", None)
    return structlog.contextvars.bound_contextvars(
        event_id=str(event.event_id),
        event_type=type(event).__name__,
        task_id=str(task_id) if task_id else None,
    )


def durable_subscriber(
    router: NatsRouter, settings: Settings, service: str, subject: str, event_type: type[Event], **options: Any
) -> Any:
    """The durable pull subscriber of ``subject`` for ``service`` (its own durable, in the stream
    that captures the subject, through its bus user's inbox), acked after its handler, documented
    with the contract; ``options``: how it pulls and decodes."""
    return router.subscriber(
        subject,
        stream=JStream(settings.subjects.stream_for(subject).name, declare=False),
        durable=durable(service, subject),
        inbox_prefix=f"{settings.nats_inbox_prefix}.".encode(),  # where its bus user may subscribe
        config=ConsumerConfig(
            max_deliver=-1,  # DeadLetters bounds deliveries, and never drops a message silently
            ack_wait=settings.ack_wait,
        ),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title=f"{service}:{subject}",
        description=(event_type.__doc__ or "").strip() or None,
        **options,
    )


@dataclass(frozen=True)
class Delivered:
    """One message of a batch: as it came (to settle it alone) and as its event."""

    raw: Msg
    meta: Any
    event: Event


_BATCH: ContextVar[tuple[Delivered, ...]] = ContextVar("routewise_batch", default=())
"""The messages of the batch being handled, in order (set by the batch decoder)."""


def consume_batches(
    router: NatsRouter,
    settings: Settings,
    service: str,
    subject: str,
    event_type: type[E],
    apply: Callable[[Sequence[Delivered]], Awaitable[None]],
    letters: DeadLetters,
) -> str:
    """Register a durable pull consumer of ``subject`` that hands ``apply`` the messages of each
    batch it fetches, each with its ``event_type`` event (up to ``consumer_batch``; ``batch_linger``
    decides how long one waits to fill, see ``routewise.runtime.pull``); return the durable's name.
    What happens to each message is ``Batches``'. The subscriber is typed with the contract, for
    the AsyncAPI document.
    """
    batches = Batches(event_type, settings.subjects, apply, letters)

    async def _consumer(events: list[Event]) -> None:
        await batches.handle()

    _consumer.__annotations__ = {"events": list[event_type], "return": None}  # type: ignore[valid-type]
    _consumer.__name__ = _consumer.__qualname__ = event_type.__name__
    durable_subscriber(
        router,
        settings,
        service,
        subject,
        event_type,
        pull_sub=PullSub(batch_size=settings.consumer_batch, timeout=1.0, batch=True),
        decoder=batches.decode,
    )(_consumer)
    return durable(service, subject)


@dataclass(frozen=True)
class Batches:
    """A batch consumer's handling of what it fetched.

    Each message is validated on its own (``decode``): one that is not the contract, comes on
    another org's subject, or is past its last delivery is dead-lettered and the rest go on. The
    batch is applied at once and acked after. When ``apply`` raises for it, or it holds a message
    delivered before (its last delivery may have died on it), its events are applied one at a
    time, each acked once applied: only the one that fails is retried with backoff
    (``DeadLetters``), and its neighbours are neither held back nor spend deliveries with it.
    """

    event_type: type[Event]
    subjects: Subjects
    apply: Callable[[Sequence[Delivered]], Awaitable[None]]
    letters: DeadLetters

    async def decode(self, msg: NatsBatchMessage) -> list[Event]:
        batch: list[Delivered] = []
        for raw in msg.raw_message:
            meta = raw.metadata
            if await self.letters.overdue(raw, meta):
                continue
            try:
                event = await decoded(self.event_type, raw, subjects=self.subjects)
            except PermanentError as exc:
                await self.letters.failed(raw, meta, exc)
                continue
            batch.append(Delivered(raw, meta, event))
        _BATCH.set(tuple(batch))
        return [d.event for d in batch]

    async def handle(self) -> None:
        batch = _BATCH.get()
        if len(batch) > 1 and any(int(d.meta.num_delivered) > 1 for d in batch):
            await self.one_at_a_time(batch)
            return
        try:
            await self.apply(batch)
            return
        except Exception as exc:
            if len(batch) == 1:
                await self.letters.failed(batch[0].raw, batch[0].meta, exc)
                return
            log.warning(
                "a batch failed; applying its events one at a time",
                event_type=self.event_type.__name__,
                events=len(batch),
                error=repr(exc),
            )
        await self.one_at_a_time(batch)

    async def one_at_a_time(self, batch: Sequence[Delivered]) -> None:
        for one in batch:
            try:
                await self.apply((one,))
            except Exception as exc:
                await self.letters.failed(one.raw, one.meta, exc)
            else:
                await one.raw.ack()


def reply(
    router: NatsRouter,
    subject: str,
    service: str,
    request_type: type[Req],
    reply_type: type[BaseModel],
    handler: Callable[[Req], Awaitable[BaseModel]],
    *,
    workers: int = 1,
) -> None:
    """Register a request/reply handler that always answers.

    Replies are the handler's model, or ``{"error": {code, message, details}}`` for an
    invalid request (``invalid_request``, answered by the DeadLetterMiddleware), a
    RoutewiseError (its code), or anything else (``internal``). Replicas share a queue group,
    so each request is answered once. The request and reply types are the subscriber's
    documented payloads (AsyncAPI).
    """

    async def _responder(request: BaseModel) -> dict[str, Any]:
        try:
            result = await handler(cast(Req, request))
        except RoutewiseError as exc:
            return error_reply(exc.code, exc.message, exc.details)
        except Exception as exc:
            log.exception("request failed", subject=subject)
            return error_reply("internal", f"{type(exc).__name__}: {exc}")
        return result.model_dump(mode="json")

    _responder.__annotations__ = {"request": request_type, "return": dict[str, Any]}
    _responder.__name__ = _responder.__qualname__ = request_type.__name__
    router.subscriber(
        subject,
        queue=service,
        decoder=contract_decoder(request_type),
        title=f"{service}:{subject}",
        max_workers=workers,
        description=(request_type.__doc__ or "").strip() or None,
    )(_responder)
    router.publisher(  # documents the answer: it goes to the asker's inbox (its request's reply subject)
        "_INBOX.>",
        schema=reply_type,
        title=f"{service}:{subject}:reply",
        description=f"The answer to {request_type.__name__} on {subject}: {reply_type.__name__}, or an ErrorReply.",
    )


def error_reply(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Always built: a message that quotes the input is made fit for a contract's text first."""
    info = ErrorInfo(code=code, message=without_nul(message), details=details or {})
    return ErrorReply(error=info).model_dump(mode="json")


def without_nul(text: str) -> str:
    """``text`` with each NUL written ``\\u0000``: no contract's text may carry NUL, and a
    validation message quotes the input that had it (a field's value, an extra field's name)."""
    return text.replace("\x00", "\\u0000")


def _validation_message(exc: Exception) -> str:
    """Why a payload is not its contract, in one line fit for a reply or a TaskRejected."""
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "request"
            parts.append(f"{where}: {err['msg']}")
        return without_nul("; ".join(parts))
    return without_nul(str(exc))


def _validation_details(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, ValidationError):
        return {"errors": json.loads(exc.json(include_url=False, include_input=False))}
    return {}


@dataclass(frozen=True)
class BusPort:
    """The base of a service's port to another service's requests: the broker, the subjects and
    how long to wait. A port names what it asks (``estimate``, ``reserve``, ...); handlers see only
    that Protocol, and tests give them an in-memory twin."""

    broker: NatsBroker
    subjects: Subjects
    timeout: float

    async def ask(self, subject: str, payload: BaseModel, reply_type: type[Res]) -> Res:
        return await request(self.broker, subject, payload, reply_type, timeout=self.timeout)


async def request(
    broker: NatsBroker, subject: str, payload: BaseModel, reply_type: type[Res], *, timeout: float
) -> Res:
    """Request/reply with a typed answer; a service's error reply raises RemoteError."""
    with request_errors(subject, timeout):
        response = await broker.request(payload.model_dump_json().encode(), subject, timeout=timeout)
    return parse_reply(response.body, reply_type)
