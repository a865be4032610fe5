"""The JetStream streams, each kept as long as its role needs, created or brought up to date.

| stream | subjects (``<ns>.``) | keeps | default |
| --- | --- | --- | --- |
| ``<NS>_TASKS`` | ``tasks.arrived`` | TaskArrived, with its prompt, until surely decided | 24 h |
| ``<NS>_EVENTS`` | ``tasks.rejected``, ``models.>``, ``costs.>``, ``feedback.>`` | what consumers apply | 30 days |
| ``<NS>_ALERTS`` | ``budgets.alerts.>`` | budget alerts, replayed by ``routewise alerts`` | 30 days |
| ``<NS>_DEADLETTER`` | ``deadletter.>`` | what a service could not apply, to read and replay | 14 days, 1 GiB |

A deployment made before the tasks stream existed has ``<ns>.tasks.>`` in its events stream, and
NATS refuses two streams with overlapping subjects. ``ensure_streams`` therefore first narrows the
events stream, then creates the tasks stream (a publish of a task in between, a few milliseconds,
is refused, never lost: the SDK raises ``unavailable``), then moves the TaskArrived the events
stream still holds and some consumer may not have applied yet into the tasks stream, with their
headers (``Nats-Msg-Id``: a replica doing the same at once is deduplicated), and purges them from
the events stream, prompts included. A copy a consumer had already applied is recognised by its
inbox (tasks are kept no longer than the inbox remembers ids). Each step is idempotent, so a
start cut short anywhere is finished by the next.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import nats.js.errors
import structlog
from nats.js.api import ConsumerConfig, DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext

from routewise.contracts.subjects import Stream
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


async def ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    """Create the streams, or bring an existing one's subjects and limits up to date, then move
    the tasks an older deployment kept in the events stream to the tasks stream. Idempotent."""
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
    await move_tasks_out_of_events(js, settings)


async def _stream_exists(js: JetStreamContext, name: str) -> bool:
    try:
        await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        return False
    return True


async def move_tasks_out_of_events(js: JetStreamContext, settings: Settings) -> int:
    """Copy the TaskArrived an older layout left in the events stream to the tasks stream (those
    younger than the tasks stream's max age, from the first one a durable consumer of tasks had
    not acknowledged), purge them from the events stream and drop its consumers of tasks.
    Returns how many were copied; 0 at once when there is nothing to move."""
    s = settings.subjects
    events, subject = s.events_stream.name, s.task_arrived
    info = await js.stream_info(events, subjects_filter=subject)
    held = (info.state.subjects or {}).get(subject, 0)
    if not held:
        return 0
    consumers = [c for c in await js.consumers_info(events) if c.config.durable_name and _consumes(c.config, subject)]
    start = min((c.ack_floor.stream_seq + 1 for c in consumers if c.ack_floor), default=1)
    cutoff = datetime.now(UTC) - timedelta(hours=settings.tasks_stream_max_age_hours)
    copied = 0
    seq = start
    while True:
        try:
            msg = await js.get_msg(events, seq=seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:  # past the last one (or another replica purged them)
            break
        seq = (msg.seq or seq) + 1
        if msg.time is not None and msg.time < cutoff:
            continue
        await js.publish(subject, msg.data or b"", headers=dict(msg.headers or {}) or None, stream=s.tasks_stream.name)
        copied += 1
    await js.purge_stream(events, subject=subject)
    for consumer in consumers:  # the services' consumers of tasks there: they consume the tasks stream now
        if consumer.config.filter_subject == subject and not consumer.config.filter_subjects:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_consumer(events, consumer.name)
    log.info(
        "moved the tasks of an older layout to their own stream",
        copied=copied,
        purged=held,
        stream=s.tasks_stream.name,
    )
    return copied


def _consumes(config: ConsumerConfig, subject: str) -> bool:
    filters = [f for f in (config.filter_subject, *(config.filter_subjects or [])) if f]
    return not filters or any(f == subject or (f.endswith(">") and subject.startswith(f[:-1])) for f in filters)
