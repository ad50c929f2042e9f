"""What the HTTP API reads from, and asks of, the running gateway."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gateway.clock import Clock, iso_time
from gateway.config import SiteConfig
from gateway.ingest import Ingest
from gateway.link import MqttLink
from gateway.metrics import Metrics
from gateway.notify import Notifier
from gateway.outbox import Outbox
from gateway.policy import zone_status
from gateway.stepper import Stepper
from gateway.storage import Storage

if TYPE_CHECKING:
    from gateway.leases import LeaseKeeper

__all__ = ["Queries"]


class Queries:
    """The `http_api.GatewayView` of a gateway, and the gauges refreshed before a scrape."""

    def __init__(
        self,
        config: SiteConfig,
        clock: Clock,
        link: MqttLink,
        ingest: Ingest,
        stepper: Stepper,
        storage: Storage,
        outbox: Outbox,
        notifier: Notifier,
        metrics: Metrics,
        leases: LeaseKeeper | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.link = link
        self.ingest = ingest
        self.stepper = stepper
        self.storage = storage
        self.outbox = outbox
        self.notifier = notifier
        self.metrics = metrics
        self.leases = leases
        self._started = time.monotonic()

    def refresh_metrics(self) -> None:
        m = self.metrics
        m.queue_depth.set(self.link.queue.qsize())
        m.outbox_depth.set(len(self.outbox))
        m.outbox_dropped.set(self.outbox.dropped)
        m.push_pending.set(self.notifier.pending)
        m.active_overrides.set(
            sum(
                len(zs.episode.overrides)
                for zs in self.stepper.state.zones.values()
                if zs.episode is not None and not zs.episode.control
            )
        )

    def health(self) -> Mapping[str, Any]:
        now = self.clock.now()
        connected = self.link.connected.is_set()
        contested = self.link.client_id_contested
        return {
            "status": "ok" if connected and not contested else "degraded",
            "site": self.config.site_id,
            "mqtt_connected": connected,
            # another client keeps taking our client id's session (a second gateway?)
            "mqtt_client_id_contested": contested,
            "queue_depth": self.link.queue.qsize(),
            "sensors_online": self.ingest.online,
            "sensors_configured": len(self.ingest.sensors),
            "uptime_s": round(time.monotonic() - self._started, 1),
            "now": now,
            "now_iso": iso_time(now, self.config.tz),
            "timezone": self.config.timezone,
            # gateways sharing the city: the zones this one holds now, with their lease
            # epochs (None: one gateway, every zone its own)
            "zones_held": None if self.leases is None else dict(self.leases.held()),
        }

    def zones(self) -> Sequence[Mapping[str, Any]]:
        now = self.clock.now()
        state = self.stepper.state
        return [zone_status(self.config, state, z.id, now) for z in self.config.zones]

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
