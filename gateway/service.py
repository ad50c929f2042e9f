"""The gateway service: MQTT in, policy, lights and notifications out.

Structure (one root `asyncio.TaskGroup`, every task named, nothing fire-and-forget):

    mqtt      connect (fixed client id, persistent session, QoS 1); messages go
              from aiomqtt's callback straight into the bounded incoming
              queue; publish the outbox; on any broker error reconnect after a
              capped, jittered back-off
    ingest    drain the queue in turns of `BATCH_MAX`: decode/validate/dedup
              (`Ingest`), step the pure policy, carry out its decisions, fold
              the turn's level records into the minute rows in memory, and
              a young garbage collection (`Collector`)
    store     write a minute's rows when it is over, in a worker thread, in
              short transactions; the sensors' own minute summaries
    tick      advance the policy clock (hold ends, renewals, silent sensors);
              a full garbage collection when one is due
    save      save the policy state after decisions and every few seconds,
              spaced in proportion to what a save costs
    push      Web Push deliveries (`Notifier`)
    http      the HTTP API
    shutdown  waits for SIGTERM/SIGINT (or `stop()`), then drains and ends the group

Decisions are recorded *before* anything is sent, so a crash in between
loses a nudge rather than sending it twice; and since nudge ids are
deterministic, a trigger replayed from an older saved state finds its id in
storage and is not notified again.

On a graceful stop every override is either left to expire (``on_stop="leave"``,
the default: a restart within the hold picks the episode up again without the
lights flickering) or released (``on_stop="release"``); either way no light is
ever left overridden without an expiry.  Storage is flushed before exit.

The incoming queue is bounded: when the gateway cannot keep up, messages are
dropped and counted (``hushlight_queue_dropped_total``) instead of memory
growing until the process dies.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import aiomqtt

from gateway import paho_io
from gateway.clock import Clock, RealClock, iso_time
from gateway.collector import Collector
from gateway.config import SiteConfig
from gateway.errors import GatewayError, StateError
from gateway.http_api import HttpApi
from gateway.ingest import Ingest
from gateway.lighting import LightingAdapter, MqttLighting
from gateway.metrics import Metrics
from gateway.mqtt import Backoff, parse_broker_url
from gateway.notify import Notifier
from gateway.policy import (
    Control,
    Decision,
    EpisodeEnded,
    Event,
    LevelEvent,
    LightStateEvent,
    Nudge,
    Override,
    PolicyState,
    Release,
    Tick,
    TriggerSuppressed,
    describe_trigger,
    explain,
    initial_state,
    state_json_parts,
    step,
    zone_status,
)
from gateway.storage import Storage, SummaryRecord

__all__ = ["Gateway", "Outbox"]

log = logging.getLogger("hushlight.gateway")

LATE_AFTER_S = 5.0  # a record older than this on arrival is a backlog: stored, never triggers
FUTURE_SKEW_S = 5.0  # a record ending further ahead than this is refused (sensor clock wrong)
QUEUE_MAX = 100_000  # ~10 s of 10,000 sensors at 1 Hz
# Messages handled per turn of the ingest task (~10-20 ms of work): between turns
# the event loop reads the socket and sends PUBACKs, so a long batch would hold
# back the broker (it keeps only so many unacknowledged messages in flight).
BATCH_MAX = 200  # keep above what one MQTT read brings (paho_io.READ_SIZE: ~110 records)
OUTBOX_MAX = 10_000
PUBLISH_WINDOW = 20  # publishes awaiting their PUBACK at once (paho's in-flight limit)
SEND_TURNS = 3  # event-loop turns from a decision to its message on the socket
# How long a thread may keep the GIL while another waits for it (CPython: 5 ms).
# The worker threads (database writes, Web Push) run bits of Python between
# their SQLite and socket calls; each bit could keep the event loop waiting for
# the interpreter 5 ms, many times in a turn, and those waits made a slow tail
# of publish -> override.  1 ms costs a few more switches and bounds each wait.
SWITCH_INTERVAL_S = 0.001
TICK_WALL_S = 0.25  # the policy clock advances at least this often (wall seconds)
SAVE_EVERY_WALL_S = 5.0  # policy state saved this often even without decisions
# After a save that took d seconds, the next waits SAVE_GAP_FACTOR * d: a small
# site saves after every decision, a huge one (the state of 10,000 sensors takes
# ~0.5 s to serialise) at most every few seconds and never spends more than
# 1 / (1 + SAVE_GAP_FACTOR) of its time saving.  Nudges are still never sent
# twice: their ids are deterministic and checked against storage before sending.
SAVE_GAP_FACTOR = 10.0
SAVE_SLICE_S = 0.002  # at most this long serialising the state per event-loop turn
STORE_EVERY_WALL_S = 1.0  # minutes that are over (and sensors' summaries) written this often
STOP_FLUSH_S = 5.0  # at most this long to drain and publish on a graceful stop
# A connection the broker ends this soon after accepting it, TAKEOVER_AFTER times
# in a row, means another client is using our client id (MQTT: the newer wins).
TAKEOVER_WITHIN_S = 3.0
TAKEOVER_AFTER = 3
EXPLAIN_EVERY_WALL_S = 10.0  # with `explain`, each zone's state is logged this often

Item = tuple[str, bytes, float]  # topic, payload, site time of arrival
# What a failing disk or database looks like: counted and logged, never fatal.
STORAGE_ERRORS = (sqlite3.Error, GatewayError, OSError)


class _Stopped(Exception):
    """Ends the root task group once the shutdown task has drained everything."""


class Outbox:
    """Messages waiting for the broker; survives reconnects, bounded (drops the oldest).

    Up to `window` publishes are in flight at once.  One at a time, each
    message waited for the previous one's PUBACK, which comes back on the
    socket behind the whole stream of incoming records: at 10,000 sensors that
    round trip is 50-150 ms, so an override queued behind two nudges waited
    for both, and a few triggers a second were enough for the queue to grow
    without end.  A message still leaves the outbox only once the broker has it.
    """

    def __init__(self, maxlen: int = OUTBOX_MAX, window: int = PUBLISH_WINDOW) -> None:
        # key (in publish order) -> (topic, payload, qos, retain)
        self._items: dict[int, tuple[str, bytes, int, bool]] = {}
        self._next_key = 0
        self._maxlen = maxlen
        self._window = window
        self._ready = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self.dropped = 0

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        if len(self._items) >= self._maxlen:
            del self._items[next(iter(self._items))]
            self.dropped += 1
        self._items[self._next_key] = (topic, payload, qos, retain)
        self._next_key += 1
        self._ready.set()
        self._empty.clear()

    def __len__(self) -> int:
        return len(self._items)

    async def pump(self, client: aiomqtt.Client) -> None:
        """Publish until cancelled, in order, up to `window` at a time; a broker error ends
        it (raised in an exception group) and what was not acknowledged is sent again
        on the next connection."""
        window = asyncio.Semaphore(self._window)
        started: set[int] = set()  # keys published on this connection

        async def one(key: int, item: tuple[str, bytes, int, bool]) -> None:
            try:
                topic, payload, qos, retain = item
                await client.publish(topic, payload, qos=qos, retain=retain)
            finally:
                window.release()
            self._items.pop(key, None)  # gone already if dropped meanwhile
            if not self._items:
                self._empty.set()

        async with asyncio.TaskGroup() as tg:
            while True:
                await self._ready.wait()
                self._ready.clear()
                for key, item in list(self._items.items()):
                    if key in started or key not in self._items:
                        continue
                    await window.acquire()
                    started.add(key)
                    tg.create_task(one(key, item), name=f"mqtt-publish-{key}")
                started &= self._items.keys()  # forget the acknowledged

    async def flushed(self) -> None:
        await self._empty.wait()


class Gateway:
    """One gateway process for one site; `run()` until `stop()` or a signal."""

    def __init__(
        self,
        config: SiteConfig,
        *,
        clock: Clock | None = None,
        lighting: LightingAdapter | None = None,
        push_send: Callable[..., Any] | None = None,
        on_stop: Literal["leave", "release"] = "leave",
        queue_max: int = QUEUE_MAX,
        install_signals: bool = True,
        explain: bool = False,
    ) -> None:
        """`explain`: log every `EXPLAIN_EVERY_WALL_S` what each zone is doing and why it
        is not nudging (the trigger's rule against each sensor's window, the schedule,
        the cooldown)."""
        self.config = config
        self.explain = explain
        self._explain_next = 0.0
        self.clock: Clock = clock or RealClock()
        self.metrics = Metrics()
        self.collector = Collector()
        self.metrics.collector(self.collector)
        # Lateness and clock-skew allowances are site seconds; under a scaled
        # demo clock one real second of network or scheduling delay is `scale`
        # site seconds, so they never drop below one real second.
        one_wall_second = 1.0 / self.clock.wall(1.0)
        self.ingest = Ingest(
            config,
            self.metrics,
            late_after_s=max(LATE_AFTER_S, one_wall_second),
            future_skew_s=max(FUTURE_SKEW_S, one_wall_second),
        )
        self.storage = Storage(
            config.storage.path, config.storage.peak_threshold_db, timezone=config.timezone
        )
        self.outbox = Outbox()
        self.lighting: LightingAdapter = lighting or MqttLighting(config.site_id, self.outbox)
        self.notifier = Notifier(
            config.site_id,
            config.webpush,
            self.storage,
            self.outbox,
            self.metrics,
            self.clock,
            send=push_send,
        )
        self.http = HttpApi(
            config.http,
            self,
            self.metrics,
            push_enabled=config.webpush.enabled,
            refresh_metrics=self._refresh_metrics,
        )
        self.on_stop = on_stop
        self.install_signals = install_signals
        self.queue: asyncio.Queue[Item] = asyncio.Queue(queue_max)
        self.state: PolicyState = initial_state(config)
        self.connected = asyncio.Event()
        self.client_id_contested = False  # the broker keeps handing our session to another
        self.ready = asyncio.Event()  # subscribed and restored: tests wait on it
        self.http_ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._started = time.monotonic()
        self._last_save = 0.0  # monotonic end of the last state save
        self._save_wanted = asyncio.Event()
        self._ingest_idle = asyncio.Event()  # the ingest task waits for the queue
        self._ingest_idle.set()
        self._summaries: list[SummaryRecord] = []  # sensors' minute summaries not yet stored
        self._sent: collections.OrderedDict[str, str] = collections.OrderedDict()  # cmd -> group

    # ------------------------------------------------------------ life cycle

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self._log_push()
        await self._restore()
        # from here on the cycle collector runs on the gateway's schedule (collector.py)
        self.collector.start()
        switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        loop = asyncio.get_running_loop()
        if self.install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._mqtt(), name="mqtt")
                tg.create_task(self._work(), name="ingest")
                tg.create_task(self._tick(), name="tick")
                tg.create_task(self._store(), name="store")
                tg.create_task(self._saver(), name="save")
                tg.create_task(self.notifier.run(), name="push")
                tg.create_task(self.http.serve(self.http_ready), name="http")
                tg.create_task(self._shutdown(), name="shutdown")
        except* _Stopped:
            pass
        except* GatewayError as group:
            # a start-up failure that says what to do (e.g. the HTTP port is taken)
            raise group.exceptions[0] from None
        finally:
            if self.install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            self.collector.stop()
            sys.setswitchinterval(switch)
            self._flush_summaries()
            self.storage.save_state(self.state, self.clock.now())
            self.storage.close()
            log.info("gateway stopped")

    def _log_push(self) -> None:
        push = self.config.webpush
        if push.enabled:
            log.info(
                "Web Push on: VAPID key %s, at most one push per subscriber every %d s",
                push.vapid_private_key,
                push.per_subscriber_min_interval_s,
            )
        else:
            log.warning(
                "Web Push off: no [webpush] vapid_private_key in %s; POST /api/subscriptions "
                "answers 503 and nudges go to the MQTT nudge topic only",
                self.config.source,
            )

    async def _restore(self) -> None:
        """Policy state from storage; commands in force the state does not know are released."""
        now = self.clock.now()
        try:
            saved = self.storage.load_state(self.config)
        except StateError as exc:
            log.error("%s; starting with a fresh policy state", exc)
            saved = None
        if saved is not None:
            self.state = saved
            log.info("policy state restored")
        known = {
            o.cmd_id
            for zs in self.state.zones.values()
            if zs.episode is not None
            for o in zs.episode.overrides
        }
        for o in self.storage.active_overrides(now):
            if o.cmd_id not in known:
                # sent, then the gateway died before saving the state that owns it
                release = Release(o.zone, o.group, f"{o.cmd_id}.r", "restart", now, o.episode)
                self.storage.record_override_sent(release, now)
                self._count_release(release)
                await self.lighting.release(release)
        # stale episodes (sensors silent, hold over) end on the first tick

    async def _shutdown(self) -> None:
        await self._stop.wait()
        log.info("stopping: draining %d queued messages", self.queue.qsize())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_FLUSH_S):
                await self._drain()
                if self.on_stop == "release":
                    await self._release_all("shutdown")
                if self.connected.is_set():
                    await self.outbox.flushed()
                # what arrived meanwhile was acknowledged to the broker: it is ours to keep
                await self._drain()
        if len(self.outbox):
            log.warning(
                "stopping with %d messages unsent (overrides expire by themselves)",
                len(self.outbox),
            )
        raise _Stopped

    async def _drain(self) -> None:
        """Handle what is queued, and let the ingest task end the turn it is in: when this
        returns, every message taken from the queue has been handled."""
        while True:
            while not self._ingest_idle.is_set():
                await self._ingest_idle.wait()  # woken, it may be busy again: look again
            if self.queue.empty():
                return
            await self._handle(self._take_batch())

    async def _release_all(self, reason: str) -> None:
        now = self.clock.now()
        zones = dict(self.state.zones)
        for zid, zs in self.state.zones.items():
            ep = zs.episode
            if ep is None:
                continue
            for i, o in enumerate(ep.overrides):
                release = Release(zid, o.group, f"{ep.id}.s{i + 1}", reason, now, ep.id)
                self.storage.record_decision(release, now)
                self.storage.record_override_sent(release, now)
                self._count_release(release)
                await self.lighting.release(release)
            # the evaluation report needs to know when (and why) the episode ended
            self.storage.record_decision(EpisodeEnded(zid, ep.id, now, reason, ep.control), now)
            zone = self.config.zones_by_id[zid]
            zones[zid] = replace(zs, episode=None, cooldown_until=now + zone.cooldown_s)
        self.state = replace(self.state, zones=zones)

    # ------------------------------------------------------------ MQTT

    async def _mqtt(self) -> None:
        broker = self.config.broker
        address = parse_broker_url(broker.url)
        backoff = Backoff()
        quick_drops = 0  # connections in a row the broker ended soon after it accepted them
        while True:
            connected_at: float | None = None
            try:
                async with aiomqtt.Client(
                    address.host,
                    address.port,
                    identifier=self.config.client_id,
                    clean_session=False,  # the broker keeps our QoS 1 messages while we are away
                    username=broker.username,
                    password=broker.password,
                    keepalive=broker.keepalive,
                    tls_context=address.tls_context(str(broker.ca) if broker.ca else None),
                    queue_type=self._inbox_type(),
                ) as client:
                    paho_io.tune(client, self._inbox_put)
                    await client.subscribe([(f, 1) for f in self.ingest.subscriptions()])
                    connected_at = time.monotonic()
                    self.connected.set()
                    self.metrics.connected.set(1)
                    self.ready.set()
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
            if connected_at is not None:
                if time.monotonic() - connected_at < TAKEOVER_WITHIN_S:
                    quick_drops += 1
                else:
                    quick_drops = 0
                    # the back-off starts over only after a connection that held, so
                    # that two clients fighting over one id slow down instead of
                    # reconnecting several times a second
                    backoff.reset()
                self.client_id_contested = quick_drops >= TAKEOVER_AFTER
                if quick_drops == TAKEOVER_AFTER or (
                    quick_drops > TAKEOVER_AFTER and quick_drops % 20 == 0
                ):
                    self.metrics.takeovers.inc()
                    log.error(
                        "the broker ended %d connections in a row within %.0f s of accepting "
                        "them: another client is most likely connecting as %r (a second "
                        "gateway?), and the broker lets one connection hold a client id, so each "
                        "takes the session from the other and neither gets the sensors' records "
                        "reliably; run one gateway per client id (stop the other one, or give "
                        "each its own broker.client_id and site)",
                        quick_drops,
                        TAKEOVER_WITHIN_S,
                        self.config.client_id,
                    )
            delay = backoff.next()
            log.info("reconnecting to %s in %.1f s", broker.url, delay)
            await asyncio.sleep(delay)

    def _inbox_type(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        """aiomqtt's incoming queue, short-circuited into the gateway's bounded queue.

        aiomqtt's message iterator starts a task and an `asyncio.wait` per
        message, which costs more than decoding the record; its `queue_type`
        hook lets each message go straight from the MQTT callback into our
        queue (stamped with its arrival time) in a few microseconds.
        """
        inbox_put = self._inbox_put

        class Inbox(asyncio.Queue[aiomqtt.Message]):
            def put_nowait(self, item: aiomqtt.Message) -> None:
                payload = item.payload
                if not isinstance(payload, bytes):
                    payload = b""  # aiomqtt gives bytes for every MQTT payload; be safe anyway
                inbox_put(item.topic.value, payload)

        return Inbox

    def _inbox_put(self, topic: str, payload: bytes) -> None:
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

    # ------------------------------------------------------------ ingest + policy

    def _take_batch(self) -> list[Item]:
        queue = self.queue
        batch = []
        for _ in range(min(BATCH_MAX, queue.qsize())):
            batch.append(queue.get_nowait())
        return batch

    async def _work(self) -> None:
        while True:
            self._ingest_idle.set()
            first = await self.queue.get()
            self._ingest_idle.clear()
            batch = [first, *self._take_batch()]
            await self._handle(batch)
            self.collector.young()
            if not self.queue.empty():
                await asyncio.sleep(0)  # `get` would not yield while the queue has items

    async def _handle(self, batch: Sequence[Item]) -> None:
        levels: list[LevelEvent] = []
        decisions: list[Decision] = []
        acks: list[tuple[str, float]] = []  # (cmd_id, at) the lights confirmed
        handle = self.ingest.handle
        try:
            for topic, payload, at in batch:
                try:
                    for accepted in handle(topic, payload, at):
                        event = accepted.event
                        if isinstance(event, SummaryRecord):
                            self._summaries.append(event)
                            continue
                        if isinstance(event, LevelEvent):
                            levels.append(event)
                            if not accepted.live:
                                continue
                        elif isinstance(event, LightStateEvent):
                            self._acked(event, acks)
                        self._step(event, at, decisions)
                except Exception as exc:  # a bug must cost one message, not the gateway
                    self.metrics.worker_errors.inc(type(exc).__name__)
                    log.exception("handling a message on %s failed", topic[:120])
                if decisions:
                    # at once, not after the rest of the batch (up to ~15 ms of work)
                    await self._carry_out(decisions)
                    decisions = []
                    # and on the wire before the rest of the batch: the outbox's pump
                    # starts the publish, paho queues the packet and asks for the
                    # writer, the writer sends, one event-loop turn each
                    for _ in range(SEND_TURNS):
                        await asyncio.sleep(0)
        finally:
            # also when stopping mid-turn: the records accepted are never lost
            if levels:
                self._fold(levels)
        if acks:
            try:
                await asyncio.to_thread(self._record_acks, acks)
            except STORAGE_ERRORS as exc:
                self.metrics.storage_errors.inc("acks")
                log.error("could not record %d acknowledgements: %s", len(acks), exc)

    def _fold(self, levels: Sequence[LevelEvent]) -> None:
        """Fold a turn's accepted records into the minute rows held in memory.

        At once, a turn (at most `BATCH_MAX` records, well under a millisecond)
        at a time: a record kept waiting for a later fold outlives the
        collector's youngest generation, and 10,000 sensors' worth of them a
        second made its older generations' collections long and frequent
        pauses (20-40 ms, several times a second), the slow tail of
        publish -> override.
        """
        try:
            self.storage.fold_levels(levels)
        except Exception as exc:  # in memory only; a bug must cost the records, not the gateway
            self.metrics.storage_errors.inc("levels")
            log.error("could not fold %d level records: %s", len(levels), exc)

    async def _store(self) -> None:
        """Write the minutes that are over, and the sensors' minute summaries, once a second."""
        while True:
            await asyncio.sleep(STORE_EVERY_WALL_S)
            summaries, self._summaries = self._summaries, []
            try:
                if self.storage.minutes_due():
                    # a minute is over: its rows go to disk in short transactions
                    await asyncio.to_thread(self.storage.write_minutes)
            except STORAGE_ERRORS as exc:
                self.metrics.storage_errors.inc("levels")
                log.error("could not write the minute levels: %s", exc)
            try:
                if summaries:
                    await asyncio.to_thread(self.storage.add_summaries, summaries)
            except asyncio.CancelledError:
                self._summaries[:0] = summaries  # stopping: kept for the final flush
                raise
            except STORAGE_ERRORS as exc:
                self.metrics.storage_errors.inc("summaries")
                log.error("could not store %d minute summaries: %s", len(summaries), exc)

    def _flush_summaries(self) -> None:
        # the minute rows held in memory are written by `Storage.close`
        summaries, self._summaries = self._summaries, []
        if summaries:
            self.storage.add_summaries(summaries)

    async def _saver(self) -> None:
        """Save the policy state when asked, spaced out in proportion to what a save costs."""
        gap = 0.0
        while True:
            await self._save_wanted.wait()
            wait = self._last_save + gap - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._save_wanted.clear()
            began = time.monotonic()
            try:
                text = await self._state_text()
                await asyncio.to_thread(self.storage.save_state_text, text, self.clock.now())
            except STORAGE_ERRORS as exc:
                self.metrics.storage_errors.inc("state")
                log.error("could not save the policy state: %s", exc)
            self._last_save = time.monotonic()
            gap = SAVE_GAP_FACTOR * (self._last_save - began)

    async def _state_text(self) -> str:
        """The policy state's JSON, built a slice of `SAVE_SLICE_S` per event-loop turn.

        Its serialisation keeps the GIL (in a thread it would stall the loop just
        the same): for 10,000 sensors that is tens of milliseconds during which
        no message would be read and no override sent.  The state is immutable,
        so the slices all describe the moment the save began.
        """
        parts: list[str] = []
        turn = time.perf_counter()
        for part in state_json_parts(self.state, windows=False):
            parts.append(part)
            if time.perf_counter() - turn >= SAVE_SLICE_S:
                await asyncio.sleep(0)
                turn = time.perf_counter()
        return "".join(parts)

    def _step(self, event: Event, now: float, out: list[Decision]) -> None:
        self.state, decisions = step(self.config, self.state, event, now)
        if decisions:
            out.extend(decisions)

    def _acked(self, event: LightStateEvent, acks: list[tuple[str, float]]) -> None:
        if event.cmd_id is not None and event.source == "override":
            group = self._sent.pop(event.cmd_id, None)
            if group is not None:
                acks.append((event.cmd_id, event.at))
                self.metrics.overrides_acked.inc(group)

    def _record_acks(self, acks: Sequence[tuple[str, float]]) -> None:
        # in a thread: the event loop never waits for the database lock
        for cmd_id, at in acks:
            self.storage.record_override_acked(cmd_id, at)

    async def _carry_out(self, decisions: Sequence[Decision]) -> None:
        now = self.clock.now()

        def record() -> set[str]:
            # A nudge id already stored was sent before a crash that lost the
            # newer policy state: the replayed trigger must not notify again.
            replayed = {
                d.nudge_id
                for d in decisions
                if isinstance(d, Nudge) and self.storage.has_nudge(d.nudge_id)
            }
            for d in decisions:
                self.storage.record_decision(d, now)
                if isinstance(d, Override | Release):
                    self.storage.record_override_sent(d, now)
            return replayed

        # Recorded before anything goes out: never twice, at worst once lost.
        # On the event loop, not in a worker thread: a few short transactions
        # (well under a millisecond; the bulk writes leave the database lock
        # every few ms and checkpoint on a connection of their own), whereas in
        # a thread each SQLite call gives up the GIL and waited up to the
        # interpreter's 5 ms switch interval to get it back from the busy
        # event loop: tens of ms per decision, the tail of publish -> override.
        try:
            replayed = record()
        except STORAGE_ERRORS as exc:
            # the lights must still get their commands (a release above all);
            # what is lost is the record, and the guard against a repeat nudge
            self.metrics.storage_errors.inc("decisions")
            log.error("could not record %d decisions: %s; carrying them out", len(decisions), exc)
            replayed = set()
        self._save_wanted.set()
        for d in decisions:
            self.metrics.decisions.inc(type(d).__name__.lower())
            try:
                await self._act(d, replayed)
            except Exception as exc:  # one failed adapter call must not stop the gateway
                self.metrics.worker_errors.inc(type(exc).__name__)
                log.exception("carrying out %s failed", type(d).__name__)

    async def _act(self, d: Decision, replayed: set[str]) -> None:
        if isinstance(d, Override):
            self._remember(d.cmd_id, d.group)
            self.metrics.overrides_sent.inc(d.group, "override")
            await self.lighting.apply(d)
            log.info(
                "override %s: %s -> %.0f%% until %s (%s)",
                d.cmd_id,
                d.group,
                d.level,
                iso_time(d.expires_at, self.config.tz),
                d.reason,
            )
        elif isinstance(d, Release):
            self._count_release(d)
            await self.lighting.release(d)
        elif isinstance(d, Nudge):
            if d.nudge_id in replayed:
                log.warning("nudge %s was sent before a restart; not again", d.nudge_id)
                return
            log.info(
                "nudge %s in %s (%s): %s",
                d.nudge_id,
                d.zone,
                d.kind,
                describe_trigger(self.config.zones_by_id[d.zone], d.evidence),
            )
            self.notifier.nudge(d)
        elif isinstance(d, Control):
            log.info(
                "control %s in %s: trigger recorded, nothing sent (%s)",
                d.control_id,
                d.zone,
                describe_trigger(self.config.zones_by_id[d.zone], d.evidence),
            )
        elif isinstance(d, TriggerSuppressed):
            log.info("zone %s: loud, but %s", d.zone, self._held_back(d))
        elif isinstance(d, EpisodeEnded):
            log.info(
                "zone %s: %s %s ended (%s)",
                d.zone,
                "control" if d.control else "nudge",
                d.episode,
                d.reason,
            )

    def _held_back(self, d: TriggerSuppressed) -> str:
        if d.why == "outside_schedule":
            zone = self.config.zones_by_id[d.zone]
            return f"outside its schedule ({', '.join(zone.schedule.texts)}): no nudge"
        if d.why == "cooldown":
            until = self.state.zones[d.zone].cooldown_until
            return f"in its cooldown until {iso_time(until, self.config.tz)}: no nudge"
        if d.why == "hourly_cap":
            return "max_nudges_per_hour reached: no nudge"
        return f"no nudge ({d.why})"

    def _count_release(self, release: Release) -> None:
        self.metrics.overrides_sent.inc(release.group, "release")
        log.info(
            "release %s: %s back to programme (%s)", release.cmd_id, release.group, release.reason
        )

    def _remember(self, cmd_id: str, group: str) -> None:
        self._sent[cmd_id] = group
        while len(self._sent) > 10_000:  # bounded: unacknowledged ids age out
            self._sent.popitem(last=False)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(min(TICK_WALL_S, self.clock.wall(1.0)))
            now = self.clock.now()
            decisions: list[Decision] = []
            try:
                for event in self.ingest.sweep(now):
                    self._step(event, now, decisions)
                self._step(Tick(now), now, decisions)
                self.collector.maybe_full()  # here: the tick is the one periodic task
                if self.explain and time.monotonic() >= self._explain_next:
                    self._explain_next = time.monotonic() + EXPLAIN_EVERY_WALL_S
                    for zone in self.config.zones:
                        log.info("%s", explain(self.config, self.state, zone.id, now))
            except Exception as exc:  # a bug must cost one tick, not the gateway
                self.metrics.worker_errors.inc(type(exc).__name__)
                log.exception("the policy tick failed")
            if decisions:
                await self._carry_out(decisions)
            elif time.monotonic() - self._last_save >= SAVE_EVERY_WALL_S:
                self._save_wanted.set()

    # ------------------------------------------------------------ what the HTTP API reads

    def _refresh_metrics(self) -> None:
        m = self.metrics
        m.queue_depth.set(self.queue.qsize())
        m.outbox_depth.set(len(self.outbox))
        m.outbox_dropped.set(self.outbox.dropped)
        m.push_pending.set(self.notifier.pending)
        m.active_overrides.set(
            sum(
                len(zs.episode.overrides)
                for zs in self.state.zones.values()
                if zs.episode is not None and not zs.episode.control
            )
        )

    def health(self) -> Mapping[str, Any]:
        now = self.clock.now()
        return {
            "status": "ok"
            if self.connected.is_set() and not self.client_id_contested
            else "degraded",
            "site": self.config.site_id,
            "mqtt_connected": self.connected.is_set(),
            # another client keeps taking our client id's session (a second gateway?)
            "mqtt_client_id_contested": self.client_id_contested,
            "queue_depth": self.queue.qsize(),
            "sensors_online": self.ingest.online,
            "sensors_configured": len(self.ingest.sensors),
            "uptime_s": round(time.monotonic() - self._started, 1),
            "now": now,
            "now_iso": iso_time(now, self.config.tz),
            "timezone": self.config.timezone,
        }

    def zones(self) -> Sequence[Mapping[str, Any]]:
        now = self.clock.now()
        return [zone_status(self.config, self.state, z.id, now) for z in self.config.zones]

    def decisions(self, limit: int) -> Sequence[Mapping[str, Any]]:
        rows = self.storage.recent_decisions(limit)
        tz = self.config.tz
        for row in rows:
            # epoch seconds for machines, and their ISO 8601 twins in the site's time zone
            for key in ("at", "expires_at"):
                value = row.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    row[f"{key}_iso"] = iso_time(value, tz)
        return rows

    def zone_ids(self) -> frozenset[str]:
        return frozenset(self.config.zones_by_id)

    def subscribe(self, endpoint: str, p256dh: str, auth: str, zones: Sequence[str]) -> bool:
        return self.storage.add_subscription(
            endpoint,
            {"p256dh": p256dh, "auth": auth},
            zones,
            self.clock.now(),
            limit=self.config.http.max_subscriptions,
        )

    def unsubscribe(self, endpoint: str) -> bool:
        return self.storage.remove_subscription(endpoint)
