"""The gateway service: MQTT in, policy, lights and notifications out.

`Gateway` wires the parts together under one root `asyncio.TaskGroup`, every
task named, nothing fire-and-forget:

    mqtt      `link.MqttLink`: the broker connection, the bounded incoming
              queue, the outbox's publishing, reconnects
    ingest    `pipeline.Pipeline`: a batch from the queue -> `Ingest` ->
              policy step (`stepper.Stepper`) -> `dispatch.Dispatcher`
              (record, then lights, nudges, logs); the minute fold in memory
    tick      `ticker.Ticker`: the policy clock (hold ends, renewals, silent
              sensors); a full garbage collection when one is due
    store     `persistence.Persistence`: minutes once they are over (the newest
              every few seconds) and the sensors' summaries
    save      the policy state, spaced by what a save costs
    push      Web Push deliveries (`notify.Notifier`)
    configs   each sensor's config ([sensor_config]) when its status shows
              another rev (`sensorconfig.ConfigDelivery`)
    http      the HTTP API (`http_api.HttpApi` over `queries.Queries`)
    shutdown  waits for SIGTERM/SIGINT (or `stop()`), then drains and ends the group

On a graceful stop every override is either left to expire (``on_stop="leave"``,
the default: a restart within the hold picks the episode up again without the
lights flickering) or released (``on_stop="release"``); either way no light is
ever left overridden without an expiry.  Storage is flushed before exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from gateway.clock import Clock, RealClock
from gateway.collector import Collector
from gateway.config import SiteConfig
from gateway.dashboard import Dashboard, DashboardPages
from gateway.dispatch import STORAGE_ERRORS, Dispatcher
from gateway.errors import GatewayError, StateError
from gateway.http_api import HttpApi
from gateway.ingest import Ingest
from gateway.lighting import LightingAdapter, MqttLighting
from gateway.link import QUEUE_MAX, Item, MqttLink
from gateway.metrics import Metrics
from gateway.notify import Notifier
from gateway.outbox import Outbox
from gateway.persistence import Persistence
from gateway.pipeline import Pipeline
from gateway.policy import PolicyState
from gateway.queries import Queries
from gateway.residents import ResidentPages
from gateway.sensorconfig import ConfigDelivery, config_owner
from gateway.stepper import Stepper
from gateway.storage import Storage
from gateway.storage.levels import EARLY_WRITE_S
from gateway.ticker import Ticker

if TYPE_CHECKING:
    from gateway.leases import LeaseKeeper

__all__ = ["SWITCH_INTERVAL_S", "Gateway"]

log = logging.getLogger("hushlight.gateway")

LATE_AFTER_S = 5.0  # a record older than this on arrival is a backlog: stored, never triggers
FUTURE_SKEW_S = 5.0  # a record ending further ahead than this is refused (sensor clock wrong)
# How long a thread may keep the GIL while another waits for it (CPython: 5 ms).
# The worker threads (database writes, Web Push) run bits of Python between
# their SQLite and socket calls; at the default each bit may keep the event
# loop waiting for the interpreter 5 ms, many times in a turn, which shows as
# a slow tail of publish -> override.  1 ms costs a few more switches and
# bounds each wait.
SWITCH_INTERVAL_S = 0.001
STOP_FLUSH_S = 5.0  # at most this long to drain and publish on a graceful stop


class _Stopped(Exception):
    """Ends the root task group once the shutdown task has drained everything."""


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
        """`explain`: log every few seconds what each zone is doing and why it is not
        nudging (see `ticker.Ticker`)."""
        self.config = config
        self._first_zone = config.zones[0].id if config.zones else None
        self.clock: Clock = clock or RealClock()
        self.on_stop = on_stop
        self.install_signals = install_signals
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
            config.storage.where, config.storage.peak_threshold_db, timezone=config.timezone
        )
        # gateways that share a PostgreSQL store share the city: each commands and nudges
        # the zones it holds a lease on; each folds every sensor's records, and a sensor's
        # rows are written by its storer, the holder of the sensor's first zone (see
        # `_stores_sensor`), which writes what it holds of a sensor on becoming its storer
        self.leases: LeaseKeeper | None = None
        if config.storage.url is not None:
            # loaded only here: PostgreSQL's driver adds some 20 MB to a SQLite gateway
            from gateway.leases import LeaseKeeper, LeaseStore

            self.storage.state_id = config.client_id
            self.leases = LeaseKeeper(
                LeaseStore(config.storage.url),
                config.client_id,
                [z.id for z in config.zones],
                ttl_s=config.storage.lease_s,
                renew_s=config.storage.lease_s / 3,
            )
            self.storage.keep_sensor = self._stores_sensor
            self.storage.keep_token = self._held_zones
            # memory covers the dead storer's last early write, its lease running out and
            # the renewal that takes it over, and a minute more
            self.storage.hold_s = 60.0 + 2 * config.storage.lease_s + EARLY_WRITE_S
        else:
            # the file's only writer: what it folds of the minute it starts in is added to
            # what its previous run wrote of that minute (`storage.levels`)
            self.storage.head_before = self.clock.now()
        self.outbox = Outbox()
        self.lighting: LightingAdapter = lighting or MqttLighting(
            config.site_id, self.outbox, self.leases.epoch if self.leases else None
        )
        self.notifier = Notifier(
            config.site_id,
            config.webpush,
            self.storage,
            self.outbox,
            self.metrics,
            self.clock,
            send=push_send,
        )
        self.link = MqttLink(
            config, self.clock, self.metrics, self.outbox, self.ingest.subscriptions, queue_max
        )
        self.stepper = Stepper(config)
        # [sensor_config]: each sensor's config, sent when its status shows another rev
        self.configs: ConfigDelivery | None = None
        if config.sensor_config is not None:
            self.configs = ConfigDelivery(
                config,
                self.outbox,
                self.metrics,
                config_owner(config, self._holds if self.leases else None),
            )
            self.metrics.sensor_configs(self.configs.behind)
        self.persistence = Persistence(self.storage, self.stepper, self.clock, self.metrics)
        self.dispatcher = Dispatcher(
            config,
            self.clock,
            self.storage,
            self.lighting,
            self.notifier,
            self.metrics,
            self.stepper,
            on_recorded=self.persistence.want_save,
            holds=self._holds if self.leases else None,
        )
        self.pipeline = Pipeline(
            self.link.queue,
            self.ingest,
            self.stepper,
            self.dispatcher,
            self.storage,
            self.persistence,
            self.collector,
            self.metrics,
            configs=self.configs,
        )
        self.ticker = Ticker(
            config,
            self.clock,
            self.ingest,
            self.stepper,
            self.dispatcher,
            self.persistence,
            self.collector,
            self.metrics,
            explain=explain,
        )
        self.queries = Queries(
            config,
            self.clock,
            self.link,
            self.ingest,
            self.stepper,
            self.storage,
            self.outbox,
            self.notifier,
            self.metrics,
            leases=self.leases,
        )
        self.http = HttpApi(
            config.http,
            self.queries,
            self.metrics,
            push_enabled=config.webpush.enabled,
            refresh_metrics=self.queries.refresh_metrics,
            residents=ResidentPages(config),
            dashboard=DashboardPages(
                Dashboard(config, self.clock, self.ingest, self.stepper), config.http
            ),
        )
        self.http_ready = asyncio.Event()
        self._stop = asyncio.Event()

    # ------------------------------------------------------------ the parts' state

    @property
    def state(self) -> PolicyState:
        return self.stepper.state

    @state.setter
    def state(self, state: PolicyState) -> None:
        self.stepper.state = state

    @property
    def queue(self) -> asyncio.Queue[Item]:
        return self.link.queue

    @property
    def connected(self) -> asyncio.Event:
        return self.link.connected

    @property
    def ready(self) -> asyncio.Event:
        """Restored and subscribed: set at the first connection (tests wait on it)."""
        return self.link.subscribed

    @property
    def client_id_contested(self) -> bool:
        return self.link.client_id_contested

    def health(self) -> Mapping[str, Any]:
        return self.queries.health()

    def zones(self) -> Sequence[Mapping[str, Any]]:
        return self.queries.zones()

    def _holds(self, zone: str) -> bool:
        return self.leases is not None and self.leases.epoch(zone) is not None

    def _stores_sensor(self, sensor: str) -> bool:
        """Whether this gateway writes `sensor`'s minute rows now: it holds the sensor's first
        zone in the site file's order (a sensor in no zone: the site's first zone).  One
        storer per sensor at a time, whichever other zones it is in, as a zone has one
        holder; between a storer's death and the takeover a sensor has none, and the new
        storer writes what it holds of the sensor.  (An old storer that handed the sensor
        over also finishes the rows it began: see `storage.levels`.)"""
        zones = self.config.zones_of_sensor.get(sensor)
        first = zones[0] if zones else self._first_zone
        return first is not None and self._holds(first)

    def _held_zones(self) -> frozenset[tuple[str, int]]:
        return frozenset(self.leases.held().items()) if self.leases is not None else frozenset()

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
                tg.create_task(self.link.run(self._stop), name="mqtt")
                tg.create_task(self.pipeline.run(), name="ingest")
                tg.create_task(self.ticker.run(), name="tick")
                tg.create_task(self.persistence.store(), name="store")
                tg.create_task(self.persistence.save(), name="save")
                tg.create_task(self.notifier.run(), name="push")
                tg.create_task(self.http.serve(self.http_ready), name="http")
                tg.create_task(self._shutdown(), name="shutdown")
                if self.leases is not None:
                    tg.create_task(self.leases.run(), name="leases")
                if self.configs is not None:
                    tg.create_task(self.configs.run(), name="configs")
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
            self.persistence.close()
            if self.leases is not None:
                self.leases.store.close()
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
            self.stepper.state = saved
            log.info("policy state restored")
        for release in self.stepper.release_unowned(self.storage.active_overrides(now), now):
            await self.dispatcher.release(release)
        # stale episodes (sensors silent, hold over) end on the first tick

    async def _shutdown(self) -> None:
        await self._stop.wait()
        log.info("stopping: draining %d queued messages", self.link.queue.qsize())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_FLUSH_S):
                await self.pipeline.drain()
                if self.on_stop == "release":
                    released = self.stepper.release_all("shutdown", self.clock.now())
                    if released:
                        await self.dispatcher.carry_out(released)
                if self.link.connected.is_set():
                    await self.outbox.flushed()
                # what arrived meanwhile was acknowledged to the broker: it is ours to keep
                await self.pipeline.drain()
        # the rows of the sensors this gateway stores, while it still holds the leases
        # that make it their storer (they are handed back when the task group ends)
        try:
            await asyncio.to_thread(self.storage.flush)
        except STORAGE_ERRORS as exc:
            self.metrics.storage_errors.inc("levels")
            log.error("could not write the minute levels: %s", exc)
        if len(self.outbox):
            log.warning(
                "stopping with %d messages unsent (overrides expire by themselves)",
                len(self.outbox),
            )
        raise _Stopped
