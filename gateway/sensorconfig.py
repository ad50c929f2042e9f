"""Each sensor's remote config (`[sensor_config]`), delivered when the sensor needs it.

A sensor publishes its status on every connection and every
`status_interval_s` after, with the `config_rev` it runs.  When an online
status shows a rev other than the site's, the gateway publishes that sensor's
config (QoS 1, not retained) on `.../sensors/{sensor}/config`; the sensor
applies it and echoes the rev in its next status.

- Not retained.  On the broker cluster a retained message stays on the node
  that received it, so a sensor connected to another node would never see it;
  a plain publish reaches the sensor's subscription on whatever node it is,
  as the gateway's own subscription sees the sensor's status from any node.
  One way for one Mosquitto and for the cluster: no retained copy at start
  either.  The sensor keeps its config in flash, so a gateway that is down
  only delays a change; a retained copy would also outlive the site's
  configuration (a removed `[sensor_config]` or an older rev would come back
  on every connection) and stay behind, out of date, on one node only.
- A sensor's first status after it was offline (or unheard of since start) is
  its birth: it subscribes to its config only after announcing itself, and a
  config published before that subscription exists is lost (on a sensor's
  first connection; later ones keep the subscription in their persistent
  session).  So a birth's config goes out `SETTLE_S` after the birth status.
- A sensor that does not echo the rev (it rejected the config, or the message
  was lost) is sent it again at most every `RESEND_S`, doubling up to
  `RESEND_MAX_S` while it keeps not echoing, so a config every sensor refuses
  does not flood the broker; each new `config_error` is logged once.
- Who sends: the gateway owning a zone of the sensor (with leases, a zone it
  holds; one gateway owns every zone).  A sensor in no zone that
  `[sensor_config.sensors]` names is configured by the holder of the first
  zone in alphabetical order (one gateway: itself).  A sensor the site's
  configuration names nowhere gets nothing: its messages are refused as
  ``unknown_sensor`` anyway.  Two gateways that both hold a zone of a sensor
  both send it the same config, which it applies once; every gateway of a
  city must therefore be given the same `[sensor_config]`.
- A gateway that starts, or takes a zone over, learns a sensor's rev from its
  next status: at once from the retained status on one Mosquitto, within the
  sensor's `status_interval_s` on the cluster (retained statuses stay on the
  node the sensor is on).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.config import SiteConfig
from gateway.metrics import Metrics
from gateway.outbox import Outbox
from protocol import payloads, topics
from protocol.errors import ProtocolError

__all__ = [
    "BURST",
    "OUTBOX_ROOM",
    "PACE_S",
    "RESEND_MAX_S",
    "RESEND_S",
    "SETTLE_S",
    "ConfigDelivery",
    "config_owner",
    "resend_after",
]

log = logging.getLogger("hushlight.sensorconfig")

SETTLE_S = 2.0  # wall seconds from a birth status to its config (the sensor subscribes after it)
RESEND_S = 30.0  # wall seconds before a config the sensor did not echo goes again
RESEND_MAX_S = 3600.0  # the longest wait between two sends, after repeated refusals
BURST = 100  # configs published at most per PACE_S (1,000 a second: 10,000 sensors in 10 s)
PACE_S = 0.1
OUTBOX_ROOM = 1000  # configs wait while the outbox holds this many messages


def config_owner(config: SiteConfig, holds: Callable[[str], bool] | None) -> Callable[[str], bool]:
    """sensor id -> whether this gateway configures it; `holds(zone)` is the lease check
    (None: one gateway, every zone its own)."""
    if holds is None:
        return lambda _sensor: True
    zones_of = config.zones_of_sensor
    first = min((z.id for z in config.zones), default=None)

    def owns(sensor: str) -> bool:
        zones = zones_of.get(sensor)
        if zones:
            return any(holds(z) for z in zones)
        return first is not None and holds(first)

    return owns


def resend_after(misses: int, resend_s: float, resend_max_s: float) -> float:
    """Seconds from the last send to the next, after `misses` sends in a row not echoed."""
    return float(min(resend_max_s, resend_s * 2 ** max(0, misses - 1)))


class _Sensor:
    __slots__ = ("due", "echoed", "error", "id", "misses", "online", "payload", "sent_at", "topic")

    def __init__(self, sensor: str, topic: str, payload: bytes) -> None:
        self.id = sensor
        self.topic = topic  # its config topic
        self.payload = payload  # its config message
        self.online: bool | None = None  # None: not heard of since start
        self.echoed: int | None = None  # the config_rev its latest online status said
        self.error: str | None = None  # the config_error its latest online status said
        self.sent_at: float | None = None  # monotonic time of the last send
        self.misses = 0  # sends in a row not answered by the rev
        self.due: float | None = None  # monotonic time of the next send, None: none planned


class ConfigDelivery:
    """Sends each configured sensor its config when its status shows another rev.

    `status(topic, payload)` takes a configured sensor's status (the pipeline
    passes it every message whose topic is in `by_status_topic`); `run()` sends
    what is due until cancelled, at most `BURST` configs every `PACE_S` and none
    while the outbox holds `OUTBOX_ROOM` messages or more: a new rev for the
    whole fleet must not crowd out the light commands, which share the outbox
    (it drops its oldest message when full).
    """

    def __init__(
        self,
        config: SiteConfig,
        outbox: Outbox,
        metrics: Metrics,
        owns: Callable[[str], bool],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        sc = config.sensor_config
        if sc is None:
            raise ValueError("ConfigDelivery needs a [sensor_config] table in the site config")
        self.rev = sc.rev
        self.outbox = outbox
        self.metrics = metrics
        self.owns = owns
        self.monotonic = monotonic
        self.settle_s = SETTLE_S
        self.resend_s = RESEND_S
        self.resend_max_s = RESEND_MAX_S
        site = config.site_id
        self.sensors: dict[str, _Sensor] = {}
        self.by_status_topic: dict[str, _Sensor] = {}
        for sensor in sorted({*config.zones_of_sensor, *sc.sensors}):
            s = _Sensor(sensor, topics.config(site, sensor), sc.payload(sensor))
            self.sensors[sensor] = s
            self.by_status_topic[topics.status(site, sensor)] = s
        self._pending: dict[str, _Sensor] = {}
        self._wake = asyncio.Event()
        self.heard = 0  # configured sensors' online statuses taken in
        self.sends = 0  # config messages published

    # -- what the gateway hears -------------------------------------------

    def status(self, topic: str, payload: bytes) -> None:
        """A message from the broker; a configured sensor's status may plan a send."""
        s = self.by_status_topic.get(topic)
        if s is None:
            return
        try:
            msg = payloads.decode("status", payload)
        except ProtocolError:
            return  # ingest counts and logs the refusal
        if msg["state"] != "online":
            s.online = False
            self._cancel(s)  # its birth plans the send again
            return
        self.heard += 1
        birth = s.online is not True
        s.online = True
        s.echoed = msg.get("config_rev")
        error = msg.get("config_error")
        if s.echoed == self.rev:
            if s.misses or s.error:
                log.info("sensor %s runs config rev %d now", s.id, self.rev)
            s.misses = 0
            s.error = None
            self._cancel(s)
            return
        if error and error != s.error:
            self.metrics.configs_refused.inc(s.id)
            log.warning(
                "sensor %s refused config rev %d (it runs rev %s): %s",
                s.id,
                self.rev,
                s.echoed,
                error[:200],
            )
        s.error = error
        if s.due is not None or not self.owns(s.id):
            return
        now = self.monotonic()
        due = now + (self.settle_s if birth else 0.0)
        if s.sent_at is not None:
            due = max(due, s.sent_at + self._resend_after(s))
        s.due = due
        self._pending[s.id] = s
        self._wake.set()

    def _resend_after(self, s: _Sensor) -> float:
        return resend_after(s.misses, self.resend_s, self.resend_max_s)

    def _cancel(self, s: _Sensor) -> None:
        s.due = None
        self._pending.pop(s.id, None)

    # -- what the gateway says ------------------------------------------------

    async def run(self) -> None:
        quiet_until = 0.0  # after a full burst: no sends before this
        while True:
            now = self.monotonic()
            soonest: float | None = None
            paused = now < quiet_until
            room = 0 if paused else min(BURST, OUTBOX_ROOM - len(self.outbox))
            retry = quiet_until if paused else now + PACE_S  # for what is due beyond the room
            sends = self.sends
            for s in list(self._pending.values()):
                assert s.due is not None
                if s.due > now:
                    if soonest is None or s.due < soonest:
                        soonest = s.due
                elif room > 0:
                    room -= 1
                    self._cancel(s)
                    self._send(s, now)
                else:
                    soonest = retry if soonest is None else min(soonest, retry)
            if not paused and room <= 0:  # a full burst, or a full outbox
                quiet_until = now + PACE_S
            if self.sends > sends:
                log.info("config rev %d sent to %d sensors", self.rev, self.sends - sends)
            self._wake.clear()
            wait = None if soonest is None else soonest - now
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _send(self, s: _Sensor, now: float) -> None:
        if not self.owns(s.id):
            return  # the lease went meanwhile: its new holder answers the next status
        s.sent_at = now
        self.outbox.publish(s.topic, s.payload, qos=1, retain=False)
        s.misses += 1
        self.sends += 1
        self.metrics.configs_sent.inc(s.id)
        log.debug("config rev %d sent to sensor %s (it runs rev %s)", self.rev, s.id, s.echoed)

    # -- what the gateway shows -------------------------------------------------

    def pending(self) -> list[str]:
        """Sensors whose config is planned to go."""
        return sorted(self._pending)

    def behind(self) -> int:
        """Sensors of this gateway heard online whose latest status shows another rev."""
        owns = self.owns
        return sum(
            1 for s in self.sensors.values() if s.online and s.echoed != self.rev and owns(s.id)
        )
