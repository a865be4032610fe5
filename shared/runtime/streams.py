"""The JetStream streams, each kept as long as its role needs, created or brought up to date.

| stream | subjects (``<ns>.``) | keeps | default |
| --- | --- | --- | --- |
| ``<NS>_TASKS`` | ``tasks.arrived.*`` | TaskArrived, with its prompt, until surely decided | 24 h |
| ``<NS>_EVENTS`` | ``tasks.rejected.*``, ``models.>``, ``costs.>``, ``feedback.>`` | what consumers apply | 30 days |
| ``<NS>_ALERTS`` | ``budgets.alerts.>`` | budget alerts, replayed by ``routewise alerts`` | 30 days |
| ``<NS>_DEADLETTER`` | ``deadletter.>`` | what a service could not apply, to read and replay | 14 days, 1 GiB |

A release before the org was in the subjects published ``<ns>.costs.recorded`` (and the others
of ``ORG_EVENTS``) without it, and the one before that kept ``<ns>.tasks.>`` in the events stream
(NATS refuses two streams with overlapping subjects). ``ensure_streams`` therefore first narrows
the events stream, then creates the tasks stream (a task published in between, a few
milliseconds, is refused, never lost: the SDK raises ``unavailable``), then moves every event the
streams still hold on a subject without its org, from the first one a durable consumer of it had
not acknowledged, onto its org's subject, and purges the originals (prompts included) and those
consumers. A copy a consumer had applied already is recognised by its inbox (it keeps its event
id; tasks are kept no longer than the inbox remembers ids). Each step is idempotent, so a start
cut short anywhere is finished by the next.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta

import nats.js.errors
import structlog
from nats.js.api import ConsumerConfig, DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext

from routewise.client.wire import event_id_of
from routewise.contracts.subjects import ORG_EVENTS, Stream, Subjects
from routewise.runtime.settings import Settings

log = structlog.get_logger(__name__)

DUPLICATE_WINDOW_S = 24 * 3600
"""JetStream drops a republished event_id seen within this window (or the stream's max age, if shorter)."""

DAY_S = 24 * 3600


def stream_limits(settings: Settings) -> dict[str, tuple[float, int]]:
    """(max age in seconds, max bytes or -1) of each stream, by name."""
    s = settings.subjects
    return {
        s.tasks_stream.name: (settings.tasks_stream_max_age_hours * 3600, -1),
        s.events_stream.name: (settings.events_stream_max_age_days * DAY_S, -1),
        s.alerts_stream.name: (settings.alerts_stream_max_age_days * DAY_S, -1),
        s.dead_letter_stream.name: (
            settings.dead_letter_stream_max_age_days * DAY_S,
            settings.dead_letter_stream_max_bytes,
        ),
    }


def stream_config(stream: Stream, settings: Settings) -> StreamConfig:
    max_age, max_bytes = stream_limits(settings)[stream.name]
    return StreamConfig(
        name=stream.name,
        subjects=list(stream.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        duplicate_window=min(DUPLICATE_WINDOW_S, max_age),
        max_age=max_age,
        max_bytes=max_bytes,
    )


async def ensure_streams(js: JetStreamContext, settings: Settings, *, move_old_events: bool = True) -> int:
    """Create the streams, or bring an existing one's subjects and limits up to date, then move
    the events an older release published without their org onto their org's subject (the
    operator's step: ``routewise streams upgrade``, ``routewise dev``; a service, whose bus user may
    not read or purge a stream, only says how many wait). Idempotent. Returns how many were moved."""
    for stream in settings.subjects.streams:
        config = stream_config(stream, settings)
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            # 10058: the name is in use with another config. 10065: "subjects overlap" — also
            # what a replica starting at the same moment gets while the other one creates the
            # stream. Either way, if the stream by our name exists now, bring it up to date; a
            # foreign stream holding our subjects is a real conflict and stops the service.
            if exc.err_code not in (10058, 10065) or not await _stream_exists(js, stream.name):
                raise
            await js.update_stream(config)
    if move_old_events:
        return await move_unsuffixed_events(js, settings)
    if waiting := await unsuffixed_events(js, settings):
        log.warning(
            "events of an older release wait on subjects without their org: run `routewise streams upgrade`"
            " as the operator (nothing is lost meanwhile; they are applied once moved)",
            waiting=waiting,
        )
    return 0


async def unsuffixed_events(js: JetStreamContext, settings: Settings) -> int:
    """How many events an older release left on subjects without their org (``move_unsuffixed_events``)."""
    return sum((await _unsuffixed(js, settings)).values())


async def _unsuffixed(js: JetStreamContext, settings: Settings) -> dict[tuple[str, str], int]:
    """(stream, event name): how many events of that kind the stream holds on the subject without their org."""
    s = settings.subjects
    held: dict[tuple[str, str], int] = {}
    for stream in (s.events_stream, s.tasks_stream):
        for name in sorted(ORG_EVENTS):
            subject = getattr(s, name)
            with contextlib.suppress(nats.js.errors.NotFoundError):
                info = await js.stream_info(stream.name, subjects_filter=subject)
                if count := (info.state.subjects or {}).get(subject, 0):
                    held[stream.name, name] = count
    return held


async def _stream_exists(js: JetStreamContext, name: str) -> bool:
    try:
        await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        return False
    return True


async def move_unsuffixed_events(js: JetStreamContext, settings: Settings) -> int:
    """Move the events an older release left on subjects without their org (``<ns>.costs.recorded``,
    and ``<ns>.tasks.arrived`` in either stream) onto their org's subject, in the stream that keeps
    it now: those from the first one a durable consumer of that subject had not acknowledged (tasks:
    younger than the tasks stream's max age), then purge them and drop those consumers (the new
    release's consumers take their names). Returns how many were moved; 0 at once when none is left."""
    moved = 0
    for stream, name in await _unsuffixed(js, settings):
        moved += await _move_unsuffixed(js, settings, stream, name)
    return moved


async def _move_unsuffixed(js: JetStreamContext, settings: Settings, stream: str, name: str) -> int:
    s = settings.subjects
    subject = getattr(s, name)
    consumers = [c for c in await js.consumers_info(stream) if c.config.durable_name and _consumes(c.config, subject)]
    start = min((c.ack_floor.stream_seq + 1 for c in consumers if c.ack_floor), default=1)
    cutoff = datetime.now(UTC) - timedelta(hours=settings.tasks_stream_max_age_hours)
    moved, seq = 0, start
    while True:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:  # past the last one (or another replica purged them)
            break
        seq = (msg.seq or seq) + 1
        if name == "task_arrived" and msg.time is not None and msg.time < cutoff:
            continue
        if (copy := _on_org_subject(s, name, msg.data or b"", dict(msg.headers or {}))) is None:
            continue  # not an event of its kind: its consumers dead-lettered it already
        target, data, headers = copy
        await js.publish(target, data, headers=headers, stream=s.stream_for(target).name)
        moved += 1
    await js.purge_stream(stream, subject=subject)
    for consumer in consumers:
        if consumer.config.filter_subject == subject and not consumer.config.filter_subjects:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_consumer(stream, consumer.name)
    log.info("moved the events of an older release to their org's subject", subject=subject, moved=moved)
    return moved


def _on_org_subject(
    s: Subjects, name: str, data: bytes, headers: dict[str, str]
) -> tuple[str, bytes, dict[str, str]] | None:
    """The copy of an unsuffixed event: its org's subject, its payload with its event id (taken from
    ``Nats-Msg-Id`` when it had none, as the consumers would), and a ``Nats-Msg-Id`` of its own (the
    original is in JetStream's duplicate window). A copy a consumer had applied is known to its inbox."""
    try:
        payload = json.loads(data)
        org = payload["scope"]["org_id"]
        if not isinstance(org, str) or not org:
            return None
        if "event_id" not in payload:
            payload["event_id"] = str(event_id_of(headers.get("Nats-Msg-Id", "")))
    except (ValueError, KeyError, TypeError):
        return None
    headers["Nats-Msg-Id"] = f"moved-{payload['event_id']}"
    return s.for_org(name, org), json.dumps(payload).encode(), headers


def _consumes(config: ConsumerConfig, subject: str) -> bool:
    filters = [f for f in (config.filter_subject, *(config.filter_subjects or [])) if f]
    return not filters or any(f == subject or (f.endswith(">") and subject.startswith(f[:-1])) for f in filters)
