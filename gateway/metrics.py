"""Counters and gauges of the gateway, rendered in the Prometheus text format.

Small on purpose: the hot path does one dict update per count, and label
values come only from bounded sets (reasons, configured sensors and zones), so
a flood of hostile topics cannot grow memory: unknown sensors share the label
value ``UNKNOWN``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

__all__ = ["UNKNOWN", "CollectorView", "Counter", "Gauge", "Metrics"]

UNKNOWN = "_unknown"


class CollectorView(Protocol):
    """What the metrics read of `gateway.collector.Collector`."""

    @property
    def full_collections(self) -> int: ...

    @property
    def last_full_ms(self) -> float: ...


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Family:
    kind = ""

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        self.name = name
        self.help = help
        self.labels = labels
        self.values: dict[tuple[str, ...], float] = {}
        # rendered `name{labels}` per label tuple: a scrape of 10,000 sensors'
        # series must not re-escape every label value each time
        self._prefix: dict[tuple[str, ...], str] = {}

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def total(self) -> float:
        return sum(self.values.values())

    def samples(self) -> Iterator[tuple[tuple[str, ...], float]]:
        if not self.labels and not self.values:
            yield (), 0.0
        yield from sorted(self.values.items())

    def render(self) -> Iterator[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        prefixes = self._prefix
        for labels, value in self.samples():
            prefix = prefixes.get(labels)
            if prefix is None:
                text = ",".join(
                    f'{k}="{_escape(v)}"' for k, v in zip(self.labels, labels, strict=True)
                )
                prefix = prefixes[labels] = f"{self.name}{{{text}}}" if labels else self.name
            yield f"{prefix} {value:.17g}"


class Counter(_Family):
    kind = "counter"

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount


class Gauge(_Family):
    kind = "gauge"

    def __init__(
        self,
        name: str,
        help: str,
        labels: tuple[str, ...] = (),
        read: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(name, help, labels)
        self.read = read

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = float(value)

    def samples(self) -> Iterator[tuple[tuple[str, ...], float]]:
        if self.read is not None:
            yield (), float(self.read())
            return
        yield from super().samples()


class Metrics:
    """Every metric of one gateway process."""

    def __init__(self) -> None:
        self.families: list[_Family] = []
        c = self._counter
        self.records_in = c("hushlight_records_total", "MQTT messages received, by kind", ("kind",))
        self.records_accepted = c(
            "hushlight_records_accepted_total", "level records accepted, by sensor", ("sensor",)
        )
        self.rejects = c(
            "hushlight_rejects_total",
            "messages refused, by reason and sensor",
            ("reason", "sensor"),
        )
        self.duplicates = c(
            "hushlight_duplicates_total", "level records seen before (sensor, seq)", ("sensor",)
        )
        self.late = c(
            "hushlight_late_records_total",
            "records stored but too old to trigger a nudge",
            ("sensor",),
        )
        self.unknown_sensors = c(
            "hushlight_unknown_sensor_records_total",
            "messages from sensors that no zone lists",
        )
        self.seq_resets = c(
            "hushlight_seq_resets_total",
            "sensors whose sequence number restarted below the dedup window",
            ("sensor",),
        )
        self.sensor_transitions = c(
            "hushlight_sensor_liveness_changes_total",
            "sensor online/offline changes, by cause",
            ("sensor", "state", "cause"),
        )
        self.decisions = c("hushlight_decisions_total", "policy decisions, by kind", ("kind",))
        self.overrides_sent = c(
            "hushlight_overrides_sent_total", "light commands published", ("group", "kind")
        )
        self.overrides_acked = c(
            "hushlight_overrides_acked_total",
            "light commands confirmed by the lighting state",
            ("group",),
        )
        self.nudges_published = c(
            "hushlight_nudges_published_total", "nudges published on MQTT", ("zone",)
        )
        self.push_sent = c("hushlight_push_sent_total", "Web Push messages accepted", ("zone",))
        self.push_failed = c(
            "hushlight_push_failed_total", "Web Push messages refused, by cause", ("cause",)
        )
        self.push_skipped = c(
            "hushlight_push_rate_limited_total",
            "Web Push messages not sent because the subscriber had one recently",
        )
        self.subscriptions_removed = c(
            "hushlight_subscriptions_expired_total",
            "subscriptions removed because the push service said they are gone",
        )
        self.http_refused = c(
            "hushlight_http_refused_total",
            "subscription requests refused before validation, by reason",
            ("reason",),
        )
        self.queue_dropped = c(
            "hushlight_queue_dropped_total", "incoming messages dropped: queue full"
        )
        self.storage_errors = c(
            "hushlight_storage_errors_total", "database writes that failed, by what", ("what",)
        )
        self.reconnects = c(
            "hushlight_mqtt_reconnects_total", "MQTT connection attempts that failed"
        )
        self.takeovers = c(
            "hushlight_mqtt_takeovers_total",
            "times the broker kept ending our connections at once: another client has our id",
        )
        self.worker_errors = c(
            "hushlight_worker_errors_total",
            "messages whose handling raised, by exception type",
            ("type",),
        )
        self.configs_sent = c(
            "hushlight_sensor_configs_sent_total",
            "sensor config messages published ([sensor_config]), by sensor",
            ("sensor",),
        )
        self.configs_refused = c(
            "hushlight_sensor_config_refusals_total",
            "new config_error texts in sensors' status (a config the sensor refused)",
            ("sensor",),
        )
        self.connected = self._gauge("hushlight_mqtt_connected", "1 while connected to the broker")
        self.sensors_online = self._gauge("hushlight_sensors_online", "sensors seen alive recently")
        self.queue_depth = self._gauge("hushlight_queue_depth", "incoming messages waiting")
        self.outbox_depth = self._gauge(
            "hushlight_outbox_depth", "outgoing messages waiting for the broker"
        )
        self.outbox_dropped = self._gauge(
            "hushlight_outbox_dropped", "outgoing messages dropped (outbox full) since start"
        )
        self.push_pending = self._gauge("hushlight_push_pending", "Web Push deliveries waiting")
        self.active_overrides = self._gauge(
            "hushlight_active_overrides", "light groups under an override now"
        )

    def collector(self, collector: CollectorView) -> None:
        """The cycle collector's figures, read at each scrape."""
        self.families.append(
            Gauge(
                "hushlight_gc_full_collections",
                "full garbage collections since start (gateway/collector.py)",
                read=lambda: collector.full_collections,
            )
        )
        self.families.append(
            Gauge(
                "hushlight_gc_last_full_ms",
                "how long the last full garbage collection held the gateway up",
                read=lambda: collector.last_full_ms,
            )
        )

    def sensor_configs(self, behind: Callable[[], int]) -> None:
        """How many sensors run another config rev than the site's, read at each scrape."""
        self.families.append(
            Gauge(
                "hushlight_sensor_configs_behind",
                "sensors this gateway configures, online, whose status shows another rev than "
                "[sensor_config]'s",
                read=behind,
            )
        )

    def _counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Counter:
        family = Counter(name, help, labels)
        self.families.append(family)
        return family

    def _gauge(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Gauge:
        family = Gauge(name, help, labels)
        self.families.append(family)
        return family

    def lines(self) -> Iterator[str]:
        """The Prometheus text, a line at a time (a caller can pause between lines)."""
        for family in self.families:
            yield from family.render()
