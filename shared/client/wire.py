"""The wire conventions of every Routewise message, for the client and the services alike: an
event carries its id as ``Nats-Msg-Id`` (JetStream drops a duplicate), a reply is the model asked
for or ``{"error": {...}}``, and a bus that does not answer becomes a RemoteError code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar
from uuid import UUID, uuid5

import nats.errors
from pydantic import BaseModel

from routewise.contracts.errors import ErrorReply, RemoteError
from routewise.contracts.events import Event
from routewise.contracts.vocabulary import ErrorCode

Res = TypeVar("Res", bound=BaseModel)


def parse_reply(data: bytes, reply_type: type[Res]) -> Res:
    """Turn a reply into ``reply_type``, or raise RemoteError with the service's code."""
    payload = json.loads(data)
    if isinstance(payload, dict) and set(payload) == {"error"}:
        err = ErrorReply.model_validate(payload).error
        raise RemoteError(err.message, code=err.code, details=err.details)
    return reply_type.model_validate(payload)


EVENT_ID_NAMESPACE = UUID("0b9f6d7e-3c1a-5e8f-9a42-6d1c2b7e4f10")
"""Names the event ids derived from a ``Nats-Msg-Id`` that is not itself a UUID."""


def event_id_of(msg_id: str) -> UUID:
    """The id of an event whose payload has none, from its ``Nats-Msg-Id`` (the same on every
    redelivery): a UUID as it is, anything else named by it."""
    msg_id = msg_id.strip()
    try:
        return UUID(msg_id)
    except ValueError:
        return uuid5(EVENT_ID_NAMESPACE, msg_id[:1024])


def msg_id_headers(event: Event, extra: dict[str, str] | None = None) -> dict[str, str]:
    headers = {"Nats-Msg-Id": str(event.event_id), "content-type": "application/json"}
    if extra:
        headers.update(extra)
    return headers


@contextmanager
def request_errors(subject: str, timeout: float) -> Iterator[None]:
    """Turn "nobody listens" and "nobody answered" into RemoteError codes a caller can act on."""
    try:
        yield
    except nats.errors.NoRespondersError as exc:
        raise RemoteError(
            f"no service is answering on {subject}; is Routewise running?", code=ErrorCode.unavailable
        ) from exc
    except TimeoutError as exc:
        raise RemoteError(f"no answer on {subject} within {timeout}s", code=ErrorCode.timeout) from exc
