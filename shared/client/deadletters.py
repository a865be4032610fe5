"""Dead letters: the events a service could not apply, kept with why, to read, replay or purge.

A service's ``DeadLetterMiddleware`` publishes each one, with the original payload and headers,
to ``<ns>.deadletter.<service>`` (stream ``<NS>_DEADLETTER``) and adds the headers below. Here
they are read (an ordered consumer over the stream's headers, or one message by its sequence:
memory stays bounded however many there are), replayed to their original subject and purged;
``routewise deadletters`` is this module on the command line.

    async with RoutewiseClient() as rw:
        letters = DeadLetters(rw.nc, rw.subjects)
        async for letter in letters.scan(DeadLetterFilter(reason="max_deliver_exceeded")):
            outcome = await letters.replay(await letters.get(letter.seq))

A replay keeps the event's id (``event_id`` in the payload, else the original ``Nats-Msg-Id``
the consumer derives it from), so every consumer's inbox applies it at most once, replayed
twice or not; the dead letter is deleted only after JetStream acknowledged the replay.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from routewise.contracts.errors import RemoteError
from routewise.contracts.subjects import ORG_EVENTS, Subjects, subject_matches
from routewise.contracts.vocabulary import ErrorCode

HEADER_REASON = "Routewise-DeadLetter-Reason"
HEADER_ERROR = "Routewise-DeadLetter-Error"
HEADER_SUBJECT = "Routewise-Original-Subject"
HEADER_DELIVERIES = "Routewise-Deliveries"
HEADER_SERVICE = "Routewise-Service"
HEADER_STREAM_SEQ = "Routewise-Stream-Seq"
HEADER_MSG_ID = "Routewise-Original-Msg-Id"
HEADER_REDACTED = "Routewise-Redacted"
"""On a dead letter whose payload was redacted (``ROUTEWISE_REDACT_PROMPTS``): what was. Never replayed."""
HEADER_REPLAYED_FROM = "Routewise-Replayed-From"
DEAD_LETTER_HEADERS = frozenset(
    {
        HEADER_REASON,
        HEADER_ERROR,
        HEADER_SUBJECT,
        HEADER_DELIVERIES,
        HEADER_SERVICE,
        HEADER_STREAM_SEQ,
        HEADER_MSG_ID,
        HEADER_REDACTED,
    }
)
"""What the dead letter adds to the original message's headers (a replay leaves them out)."""

SUMMARY_CHARS = 120
"""The error of a dead letter in a listing: on one line, this long at most."""

NO_SUCH_SEQUENCE = (10043, 10057)
"""JetStream's error codes for "no message at that sequence"."""

READ_TIMEOUT_S = 5.0
"""How long a scan waits for the stream's next message before it says the server stopped sending."""


class ReplayStatus(StrEnum):
    replayed = "replayed"
    would_replay = "would_replay"
    """--dry-run: what a replay would publish; nothing published or deleted."""
    skipped = "skipped"
    """Not replayed, and kept: the detail says why."""


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter: its sequence in the dead-letter stream, when it was written, its headers and
    (unless read headers-only) the original payload."""

    seq: int
    time: datetime
    subject: str
    headers: Mapping[str, str]
    size: int
    data: bytes | None = None

    @property
    def service(self) -> str:
        return self.headers.get(HEADER_SERVICE, "")

    @property
    def original_subject(self) -> str:
        return self.headers.get(HEADER_SUBJECT, "")

    @property
    def reason(self) -> str:
        return self.headers.get(HEADER_REASON, "")

    @property
    def error(self) -> str:
        return self.headers.get(HEADER_ERROR, "")

    @property
    def summary(self) -> str:
        """The error on one line, its exception named without its module, bounded."""
        text = re.sub(r"^(?:\w+\.)+(\w+:)", r"\1", " ".join(self.error.split()))
        return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"

    @property
    def msg_id(self) -> str | None:
        """The original message's ``Nats-Msg-Id`` (dead letters written before it was kept have none)."""
        return self.headers.get(HEADER_MSG_ID) or None

    @property
    def event_id(self) -> str | None:
        """The ``event_id`` of the payload, when the payload is a JSON object that has one."""
        if self.data is None:
            return None
        try:
            payload = json.loads(self.data)
        except ValueError:
            return None
        found = payload.get("event_id") if isinstance(payload, dict) else None
        return found if isinstance(found, str) and found else None


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters: by the service that wrote them, the original subject (NATS wildcards
    allowed), the reason, and when they were written (``since`` inclusive, ``until`` exclusive)."""

    service: str | None = None
    subject: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (self.service is None or letter.service == self.service)
            and (self.subject is None or subject_matches(self.subject, letter.original_subject))
            and (self.reason is None or letter.reason == self.reason)
            and (self.since is None or letter.time >= self.since)
            and (self.until is None or letter.time < self.until)
        )


@dataclass(frozen=True)
class ReplayOutcome:
    seq: int
    status: ReplayStatus
    subject: str
    detail: str = ""
    event_id: str | None = None


@dataclass
class DeadLetters:
    """The dead letters of one deployment (``subjects``' namespace), on a connected NATS client."""

    nc: NatsClient
    subjects: Subjects
    timeout: float = READ_TIMEOUT_S
    _stream: str = field(init=False)

    def __post_init__(self) -> None:
        self._stream = self.subjects.dead_letter_stream.name

    async def scan(
        self, where: DeadLetterFilter | None = None, *, up_to: int | None = None
    ) -> AsyncIterator[DeadLetter]:
        """Every dead letter that ``where`` matches, oldest first, headers only (no payload), up to
        the last one written when the scan began (so what a replay writes is not read again), or
        to sequence ``up_to``."""
        where = where or DeadLetterFilter()
        js = self.nc.jetstream()
        try:
            info = await js.stream_info(self._stream)
        except nats.js.errors.NotFoundError:
            raise RemoteError(
                f"no dead-letter stream {self._stream} on this NATS; is Routewise running (namespace "
                f"{self.subjects.namespace!r})?",
                code=ErrorCode.unavailable,
            ) from None
        last = info.state.last_seq if up_to is None else min(up_to, info.state.last_seq)
        if not info.state.messages:
            return
        config = ConsumerConfig(headers_only=True, inactive_threshold=60.0)
        if where.since is not None:
            config.deliver_policy, config.opt_start_time = DeliverPolicy.BY_START_TIME, where.since
        filter_subject = (
            self.subjects.dead_letter(where.service) if where.service else f"{self.subjects.namespace}.deadletter.>"
        )
        sub = await js.subscribe(filter_subject, stream=self._stream, ordered_consumer=True, config=config)
        try:
            consumer = await sub.consumer_info()
            if consumer.num_pending == 0 and not (consumer.delivered and consumer.delivered.consumer_seq):
                return  # nothing matches (what was sent already counts as delivered, no more pending)
            while True:
                try:
                    msg = await sub.next_msg(timeout=self.timeout)
                except nats.errors.TimeoutError:
                    raise RemoteError(
                        f"the dead-letter stream {self._stream} stopped sending", code=ErrorCode.timeout
                    ) from None
                meta = msg.metadata
                letter = _from_msg(msg)
                if letter.seq > last or (where.until is not None and letter.time >= where.until):
                    return
                if where.matches(letter):
                    yield letter
                if letter.seq >= last or meta.num_pending == 0:
                    return
        finally:
            await sub.unsubscribe()

    async def get(self, seq: int) -> DeadLetter:
        """One dead letter with its payload; RemoteError ``not_found`` when there is none at ``seq``."""
        try:
            raw = await self.nc.jetstream().get_msg(self._stream, seq)
        except nats.js.errors.NotFoundError:
            raise RemoteError(f"no dead letter {seq} in {self._stream}", code=ErrorCode.not_found) from None
        headers = dict(raw.headers or {})
        data = raw.data or b""
        when = raw.time or datetime.fromtimestamp(0, UTC)
        return DeadLetter(seq, when, raw.subject or "", headers, len(data), data)

    async def delete(self, seq: int) -> bool:
        """Delete one dead letter; False when there was none at ``seq``."""
        try:
            return await self.nc.jetstream().delete_msg(self._stream, seq)
        except nats.js.errors.NotFoundError:
            return False
        except nats.js.errors.APIError as exc:
            if exc.err_code in NO_SUCH_SEQUENCE:
                return False
            raise

    async def replay(self, letter: DeadLetter, *, dry_run: bool = False) -> ReplayOutcome:
        """Publish the original payload to its original subject, keeping the event's id, then
        delete the dead letter (only once JetStream acknowledged the publish). A dead letter that
        cannot be applied once (no event id), or whose subject is not an event of this deployment,
        is skipped and kept, as is one whose payload was redacted."""
        assert letter.data is not None, "replay a dead letter read with get(), payload and all"
        subject = self._current_subject(letter.original_subject, letter.data)
        target = self._event_stream(subject)
        if target is None:
            return ReplayOutcome(letter.seq, ReplayStatus.skipped, subject, "not an event subject of this deployment")
        if redacted := letter.headers.get(HEADER_REDACTED):
            why = f"its payload was redacted ({redacted}): it is not the event that was sent"
            return ReplayOutcome(letter.seq, ReplayStatus.skipped, subject, why)
        event_id = letter.event_id
        # With the event id in the payload, a fresh Nats-Msg-Id (per dead letter) so that JetStream's
        # duplicate window does not drop the replay; the consumers' inboxes apply the id once. Without
        # it, the consumers derive the id from the original Nats-Msg-Id, which must then be kept.
        msg_id = f"replay-{self._stream}-{letter.seq}" if event_id else letter.msg_id
        if msg_id is None:
            why = "no event id (neither in the payload nor its Nats-Msg-Id): it could not be applied once"
            return ReplayOutcome(letter.seq, ReplayStatus.skipped, subject, why)
        shown_id = event_id or f"from Nats-Msg-Id {msg_id}"
        if dry_run:
            return ReplayOutcome(letter.seq, ReplayStatus.would_replay, subject, event_id=shown_id)
        headers = {
            k: v for k, v in letter.headers.items() if k not in DEAD_LETTER_HEADERS and not k.startswith("Nats-")
        }
        headers |= {"Nats-Msg-Id": msg_id, HEADER_REPLAYED_FROM: f"{self._stream}:{letter.seq}"}
        ack = await self.nc.jetstream().publish(
            subject, letter.data, headers=headers, stream=target, timeout=self.timeout
        )
        if ack.duplicate and not event_id:
            why = (
                f"JetStream still remembers Nats-Msg-Id {msg_id} (its duplicate window) and dropped the replay; "
                "kept, replay it later"
            )
            return ReplayOutcome(letter.seq, ReplayStatus.skipped, subject, why, shown_id)
        await self.delete(letter.seq)
        return ReplayOutcome(letter.seq, ReplayStatus.replayed, subject, event_id=shown_id)

    def _current_subject(self, subject: str, data: bytes) -> str:
        """Where the event goes now: an older release's subject without its org (a letter written
        before the org was in the subject) becomes its org's, from the payload's scope."""
        name = next((n for n in ORG_EVENTS if getattr(self.subjects, n) == subject), None)
        if name is None:
            return subject
        try:
            org = json.loads(data)["scope"]["org_id"]
        except (ValueError, KeyError, TypeError):
            return subject
        return self.subjects.for_org(name, org) if isinstance(org, str) and org else subject

    def _event_stream(self, subject: str) -> str | None:
        """The stream that stores ``subject`` when it is one of this deployment's (never the dead
        letters' own): dead letters come from JetStream consumers only, never from requests."""
        try:
            stream = self.subjects.stream_for(subject)
        except LookupError:
            return None
        return None if stream == self.subjects.dead_letter_stream else stream.name


def _from_msg(msg: Msg) -> DeadLetter:
    meta = msg.metadata
    headers = dict(msg.headers or {})
    size = int(headers.pop("Nats-Msg-Size", len(msg.data)))
    return DeadLetter(meta.sequence.stream, meta.timestamp, msg.subject, headers, size)
