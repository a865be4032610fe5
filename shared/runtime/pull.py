"""Pull subscriptions that FastStream's pull loop can live with: the broker every service runs on.

FastStream's JetStream pull loop (``PullStreamSubscriber._consume_pull``) calls
``subscription.fetch(batch, timeout)`` forever and waits out exactly three errors:
``nats.errors.TimeoutError``, ``ConnectionClosedError`` and ``ServiceUnavailableError``. Two
things nats-py does there hurt a service:

- **An ERROR at every start.** ``fetch`` of more than one message first sends a no-wait probe
  *with* ``expires`` (the server then holds it until it expires, a hair before the caller's
  timer), and when the server's answer wins that race, ``_fetch_n`` finds its time used up and
  raises a bare ``asyncio.TimeoutError`` (not the nats kind). The loop does not wait that one
  out: its task dies, FastStream logs "Task-N raised an exception, retrying" with a traceback at
  ERROR and starts it again. The race is lost a few times in a hundred idle fetches, so every
  service hit it within its first seconds (and after each reconnect).
- **A loop that never yields.** Once the connection is closed, ``fetch`` raises
  ``ConnectionClosedError`` before its first ``await`` suspends, and the loop, which waits that
  error out, calls it again at once: the event loop never runs anything else (no health
  endpoint, no shutdown). While the client is reconnecting, each fetch queues a pull request in
  the client's buffer, all sent at once, stale, when the connection is back.

``PatientPullSubscription.fetch`` turns the bare timeout into the nats one (the kind the loop
waits out) and, while the connection is not up, asks the server nothing: it waits (at most the
fetch's timeout, less once the connection is back) and says "no messages" with the same
timeout. ``PatientBroker`` is a ``NatsBroker`` whose subscribers get these subscriptions.

A batch consumer's subscription (its durable in ``PatientBroker.batches``, with its linger) makes one
batch of what one fetch brings: the first message (waited for as long as the fetch may), then
whatever else comes within the consumer's linger. FastStream's batch loop would otherwise go on
fetching until the batch is full or its timeout is up (a second per batch when traffic is light);
its follow-up fetch of a round (asking for fewer than a full batch) is told "no messages" at once.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import nats.errors
from faststream.nats import NatsBroker
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

DISCONNECTED_POLL_S = 0.1
"""How often a fetch held back by a lost connection looks whether it is back."""


class PatientPullSubscription(JetStreamContext.PullSubscription):
    """A pull subscription whose ``fetch`` raises only the timeout kind FastStream waits out, and
    sends nothing while the connection is down (see the module's docstring)."""

    linger: float | None = None
    """A batch consumer's: how long, once a message came, more are waited for (see the module)."""
    _full = 0

    async def fetch(self, batch: int = 1, timeout: float | None = 5, heartbeat: float | None = None) -> list[Msg]:
        nc: NatsClient = self._nc
        if not nc.is_connected:
            await _until_connected(nc, timeout or DISCONNECTED_POLL_S)
            raise nats.errors.TimeoutError
        if self.linger is None:
            return await self._fetch(batch, timeout, heartbeat)
        if batch < self._full:  # FastStream's follow-up in the same round: the batch is what came
            raise nats.errors.TimeoutError
        self._full = batch
        first = await self._fetch(1, timeout, heartbeat)
        if batch == 1 or self.linger == 0:
            return first
        try:
            return first + await self._fetch(batch - 1, self.linger, None)
        except Exception:  # nothing more came (or the connection went): the batch is the first message
            return first

    async def _fetch(self, batch: int, timeout: float | None, heartbeat: float | None) -> list[Msg]:
        try:
            return await super().fetch(batch, timeout, heartbeat)
        except nats.errors.TimeoutError:
            raise
        except TimeoutError as exc:  # nats-py's bare asyncio.TimeoutError: the server answered as our time ran out
            raise nats.errors.TimeoutError from exc


async def _until_connected(nc: NatsClient, most: float) -> None:
    """Wait until ``nc`` is connected again, at most ``most`` seconds (always yielding at least once)."""
    deadline = time.monotonic() + most
    while True:
        await asyncio.sleep(min(DISCONNECTED_POLL_S, max(deadline - time.monotonic(), 0)))
        if nc.is_connected or time.monotonic() >= deadline:
            return


class PatientJetStream(JetStreamContext):
    """A JetStream context whose pull subscriptions are ``PatientPullSubscription``s; ``batches``:
    the durables of batch consumers, with their linger."""

    def __init__(self, *args: Any, batches: Mapping[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batches = batches or {}

    async def pull_subscribe_bind(self, *args: Any, **kwargs: Any) -> JetStreamContext.PullSubscription:
        plain = await super().pull_subscribe_bind(*args, **kwargs)
        patient = PatientPullSubscription(
            js=self, sub=plain._sub, stream=plain._stream, consumer=plain._consumer, deliver=plain._deliver.encode()
        )
        patient.linger = self._batches.get(kwargs.get("durable") or "")
        return patient


class PatientBroker(NatsBroker):
    """A ``NatsBroker`` whose subscribers pull through ``PatientPullSubscription``s, and which stops
    even when its connection is closed for good."""

    @functools.cached_property
    def batches(self) -> dict[str, float]:
        """The durables of the batch consumers, with their linger (filled as they are registered)."""
        return {}

    async def _connect(self) -> NatsClient:
        connection = await super()._connect()
        config = self.config.broker_config
        js = PatientJetStream(connection, batches=self.batches, **config.js_options)
        config.connection_state.connect(connection, js)
        return connection

    async def stop(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> None:
        """Stopped as usual; on a connection closed for good (the bus is gone) there is nothing left
        to unsubscribe or drain, and saying so for each subscriber must not fail the shutdown."""
        try:
            await super().stop(exc_type, exc_val, exc_tb)
        except* nats.errors.ConnectionClosedError:
            self._connection = None
            self.config.disconnect()
