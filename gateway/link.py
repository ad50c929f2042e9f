"""The MQTT link: connect, subscribe, read into the bounded inbox, publish the outbox.

The gateway keeps one connection with a fixed client id and a persistent
session (QoS 1: the broker keeps the sensors' records while the gateway is
away).  Any broker error ends the connection; the link reconnects after a
capped, jittered back-off.  A broker that keeps ending connections soon after
accepting them is handing the session to another client with the same id.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Sequence

import aiomqtt

from gateway import paho_io
from gateway.clock import Clock
from gateway.config import SiteConfig
from gateway.metrics import Metrics
from gateway.mqtt import Backoff
from gateway.outbox import Outbox

__all__ = ["QUEUE_MAX", "Item", "MqttLink"]

log = logging.getLogger("hushlight.gateway")

QUEUE_MAX = 100_000  # ~10 s of 10,000 sensors at 1 Hz
# A connection the broker ends this soon after accepting it, TAKEOVER_AFTER times
# in a row, means another client is using our client id (MQTT: the newer wins).
TAKEOVER_WITHIN_S = 3.0
TAKEOVER_AFTER = 3

Item = tuple[str, bytes, float]  # topic, payload, site time of arrival


class MqttLink:
    """The broker connection of one gateway; `run()` until cancelled.

    Messages go from paho's callback straight into `queue`, stamped with their
    arrival; when the queue is full they are dropped and counted instead of
    memory growing until the process dies.
    """

    def __init__(
        self,
        config: SiteConfig,
        clock: Clock,
        metrics: Metrics,
        outbox: Outbox,
        subscriptions: Callable[[], Sequence[str]],
        queue_max: int = QUEUE_MAX,
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.outbox = outbox
        self.subscriptions = subscriptions
        self.queue: asyncio.Queue[Item] = asyncio.Queue(queue_max)
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()  # set once, at the first subscription
        self.client_id_contested = False  # the broker keeps handing our session to another
        self._quick_drops = 0  # connections in a row the broker ended soon after accepting

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        """Connect, reconnect, read and publish until cancelled.  `stopping`: the
        gateway's stop, set before it cancels this task (see below)."""
        broker = self.config.broker
        backoff = Backoff()
        while True:
            connected_at: float | None = None
            try:
                async with aiomqtt.Client(
                    broker.host,
                    broker.port,
                    identifier=self.config.client_id,
                    clean_session=False,  # the broker keeps our QoS 1 messages while we are away
                    username=broker.username,
                    password=broker.password,
                    keepalive=broker.keepalive,
                    tls_context=self._tls(),
                    queue_type=self._inbox_type(),
                ) as client:
                    paho_io.tune(client, self.put)
                    await client.subscribe([(f, 1) for f in self.subscriptions()])
                    if stopping is not None and stopping.is_set():
                        # aiomqtt waits for the CONNACK and the SUBACK with
                        # `asyncio.wait_for`, which on Python 3.11 drops a cancellation
                        # that comes as the awaited future completes (fixed in 3.12).
                        # A persistent session hands the queued records over right
                        # after the CONNACK, so a gateway stopped in that moment went
                        # on into its read loop and never stopped.
                        raise asyncio.CancelledError
                    connected_at = time.monotonic()
                    self.connected.set()
                    self.metrics.connected.set(1)
                    self.subscribed.set()
                    log.info("connected to %s as %s", broker.url, self.config.client_id)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._read(client), name="mqtt-read")
                        tg.create_task(self.outbox.pump(client), name="mqtt-publish")
            except* aiomqtt.MqttError as group:
                self.metrics.reconnects.inc()
                log.warning("broker %s: %s", broker.url, group.exceptions[0])
            finally:
                self.connected.clear()
                self.metrics.connected.set(0)
            if connected_at is not None and not self._dropped(time.monotonic() - connected_at):
                # the back-off starts over only after a connection that held, so that
                # two clients fighting over one id slow down instead of reconnecting
                # several times a second
                backoff.reset()
            delay = backoff.next()
            log.info("reconnecting to %s in %.1f s", broker.url, delay)
            await asyncio.sleep(delay)

    def _tls(self) -> ssl.SSLContext | None:
        # made for each connection: a CA file replaced on disk applies at the next one
        broker = self.config.broker
        if not broker.tls:
            return None
        return ssl.create_default_context(cafile=str(broker.ca) if broker.ca else None)

    def _dropped(self, lasted_s: float) -> bool:
        """Count a connection that ended after `lasted_s`; True if it ended quickly."""
        if lasted_s >= TAKEOVER_WITHIN_S:
            self._quick_drops = 0
            self.client_id_contested = False
            return False
        self._quick_drops += 1
        drops = self._quick_drops
        self.client_id_contested = drops >= TAKEOVER_AFTER
        if drops == TAKEOVER_AFTER or (drops > TAKEOVER_AFTER and drops % 20 == 0):
            self.metrics.takeovers.inc()
            log.error(
                "the broker ended %d connections in a row within %.0f s of accepting "
                "them: another client is most likely connecting as %r (a second "
                "gateway?), and the broker lets one connection hold a client id, so each "
                "takes the session from the other and neither gets the sensors' records "
                "reliably; run one gateway per client id (stop the other one, or give "
                "each its own broker.client_id and site)",
                drops,
                TAKEOVER_WITHIN_S,
                self.config.client_id,
            )
        return True

    def _inbox_type(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        """aiomqtt's incoming queue, short-circuited into the gateway's bounded queue.

        aiomqtt's message iterator starts a task and an `asyncio.wait` per
        message, which costs more than decoding the record; its `queue_type`
        hook lets each message go straight from the MQTT callback into our
        queue (stamped with its arrival time) in a few microseconds.
        """
        put = self.put

        class Inbox(asyncio.Queue[aiomqtt.Message]):
            def put_nowait(self, item: aiomqtt.Message) -> None:
                payload = item.payload
                if not isinstance(payload, bytes):
                    payload = b""  # aiomqtt gives bytes for every MQTT payload; be safe anyway
                put(item.topic.value, payload)

        return Inbox

    def put(self, topic: str, payload: bytes) -> None:
        """One message into the bounded queue, stamped with its arrival; never raises.

        `paho_io.tune` calls this straight from paho (no `aiomqtt.Message` per
        record); `_inbox_type` is the way in when tuning does not apply (websockets,
        another paho).
        """
        try:
            self.queue.put_nowait((topic, payload, self.clock.now()))
        except asyncio.QueueFull:
            self.metrics.queue_dropped.inc()

    async def _read(self, client: aiomqtt.Client) -> None:
        """Returns (with MqttError) when the connection drops; messages never stop here."""
        async for _ in client.messages:
            pass
