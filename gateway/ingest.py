"""Ingest: from raw MQTT messages to policy events, never raising on bad input.

Every message is classified once: accepted (and turned into an event),
counted as a duplicate, or refused with a reason (the `ProtocolError.reason`
codes of protocol/, plus ``unknown_sensor``, ``unknown_group`` and ``future_time``).
Refusals are counted per sensor and reason and logged at a bounded rate;
nothing a sender does makes this module raise.

Memory stays bounded whatever arrives: topics of configured sensors and
groups are known up front (the fast path is one dict lookup), everything else
is classified without being remembered, and duplicates are detected with a
fixed-size sliding window per configured sensor (the anti-replay window of
IPsec, RFC 4303 3.4.3): the highest ``seq`` seen plus a bitmask of the
`WINDOW` sequence numbers below it.

A record older than `late_after_s` when it arrives (a sensor catching up
after an outage) is stored but flagged not live, so it never triggers a nudge
in the past.  Liveness comes from the retained status and its last will, and
from silence: a sensor that sent nothing for ``stale_after_s`` goes offline.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from gateway.clock import iso_time
from gateway.config import SiteConfig
from gateway.events import LevelEvent, LightStateEvent, StatusEvent, SummaryRecord
from gateway.metrics import UNKNOWN, Metrics
from protocol import payloads, topics
from protocol.errors import ProtocolError

__all__ = ["WINDOW", "Accepted", "Ingest", "SeqWindow"]

log = logging.getLogger("hushlight.ingest")

WINDOW = 4096  # sequence numbers remembered below the highest one, per sensor
_FULL = (1 << WINDOW) - 1
LOG_EVERY_S = 10.0  # at most one log line per (reason, sensor) this often
STATUS_FIELDS = (
    "fw",
    "uptime_s",
    "free_mem",
    "dsp_load",
    "buffered",
    "calibration_offset_db",
    "config_rev",
    "config_error",
)


class SeqWindow:
    """Sliding window of sequence numbers already accepted from one sensor."""

    __slots__ = ("floor_t", "last_t1", "mask", "top")

    def __init__(self) -> None:
        self.top = -1
        self.mask = 0  # bit i set: seq (top - i) was accepted
        self.last_t1 = 0.0
        self.floor_t = -1.0  # records ending before the last counter reset are replays

    def accept(self, seq: int, t0: float, t1: float) -> str | None:
        """Remember `seq`; None if it is new, else why it is not (``duplicate``, ``too_old``).

        A sequence number far below the window whose record starts after the
        newest record seen means the sensor lost its counter (flash wiped): the
        window restarts there instead of refusing the sensor forever; records
        that end before that restart can then only be replays (a wiped sensor
        lost its backlog too) and are refused as ``too_old``.
        """
        if t1 <= self.floor_t:
            return "too_old"
        top = self.top
        if seq > top:
            shift = seq - top
            self.mask = ((self.mask << shift) | 1) & _FULL if shift < WINDOW else 1
            self.top = seq
        else:
            back = top - seq
            if back >= WINDOW:
                if t0 >= self.last_t1:
                    self.top, self.mask = seq, 1
                    self.last_t1 = t1
                    self.floor_t = t0
                    return "reset"
                return "too_old"
            bit = 1 << back
            if self.mask & bit:
                return "duplicate"
            self.mask |= bit
        if t1 > self.last_t1:
            self.last_t1 = t1
        return None


@dataclass(slots=True)
class Accepted:
    """One event for the service; `live` False for late records (store, do not trigger)."""

    event: LevelEvent | StatusEvent | LightStateEvent | SummaryRecord
    live: bool = True


class _Sensor:
    __slots__ = ("id", "last_seen", "online", "status", "window")

    def __init__(self, sensor_id: str) -> None:
        self.id = sensor_id
        self.window = SeqWindow()
        self.online: bool | None = None  # None: not heard of since start-up
        self.last_seen = 0.0
        self.status: dict[str, Any] | None = None  # its latest online status, for the dashboard


class Ingest:
    def __init__(
        self,
        config: SiteConfig,
        metrics: Metrics,
        *,
        late_after_s: float = 5.0,
        future_skew_s: float = 5.0,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.site = config.site_id
        self.late_after_s = late_after_s
        self.future_skew_s = future_skew_s
        self.stale_after_s = float(config.stale_after_s)
        self.sensors = {s: _Sensor(s) for s in config.zones_of_sensor}
        self.groups = set(config.zones_of_group)
        # topic -> (leaf, id): the fast path for every message of a configured device
        self._known: dict[str, tuple[str, str]] = {}
        for s in self.sensors:
            for leaf in ("levels", "summary", "status", "config"):
                self._known[f"{topics.root(self.site)}/sensors/{s}/{leaf}"] = (leaf, s)
        for g in self.groups:
            self._known[topics.light_state(self.site, g)] = ("state", g)
        self._logged: dict[tuple[str, str], float] = {}
        self._online_count = 0

    def subscriptions(self) -> list[str]:
        """Topic filters the gateway subscribes to (wide, so that strays are counted)."""
        root = topics.root(self.site)
        return [f"{root}/sensors/#", topics.lights_wildcard(self.site, "state")]

    # -- the entry point -------------------------------------------------

    def handle(self, topic: str, payload: bytes, now: float) -> list[Accepted]:
        """Classify one message; the events it yields (usually one, none if refused)."""
        known = self._known.get(topic)
        if known is None:
            self._stray(topic)
            return []
        leaf, ident = known
        if leaf == "levels":
            return self._levels(self.sensors[ident], payload, now)
        if leaf == "status":
            return self._status(self.sensors[ident], payload, now)
        if leaf == "state":
            return self._light_state(ident, payload, now)
        if leaf == "summary":
            return self._summary(self.sensors[ident], payload)
        # config echoes (retained, from the tools) are not the gateway's input
        self.metrics.records_in.inc(leaf)
        return []

    def sweep(self, now: float) -> list[StatusEvent]:
        """Sensors silent for longer than ``stale_after_s`` go offline."""
        out: list[StatusEvent] = []
        limit = now - self.stale_after_s
        for s in self.sensors.values():
            if s.online and s.last_seen < limit:
                out.append(self._set_online(s, False, now, "silence"))
        return out

    @property
    def online(self) -> int:
        return self._online_count

    def fleet(self) -> list[dict[str, Any]]:
        """Each configured sensor's liveness and what its latest online status said."""
        out = []
        wanted = None if self.config.sensor_config is None else self.config.sensor_config.rev
        for s in self.sensors.values():
            st = s.status or {}
            out.append(
                {
                    "sensor": s.id,
                    "online": s.online,
                    "last_seen": s.last_seen or None,
                    **{k: st.get(k) for k in STATUS_FIELDS},
                    # [sensor_config]'s rev, which the gateway sends a sensor running another
                    "config_rev_wanted": wanted,
                }
            )
        return out

    # -- per message kind ------------------------------------------------

    def _levels(self, s: _Sensor, payload: bytes, now: float) -> list[Accepted]:
        m = self.metrics
        m.records_in.inc("levels")
        try:
            rec = payloads.decode("levels", payload)
        except ProtocolError as exc:
            self._reject(exc.reason, s.id, str(exc))
            return []
        t0 = rec["t0"] / 1000.0
        t1 = rec["t1"] / 1000.0
        if t1 > now + self.future_skew_s:
            self._reject(
                "future_time",
                s.id,
                f"record seq {rec['seq']} ends at {iso_time(t1, self.config.tz)}, "
                f"{t1 - now:.1f} s in the future; check the sensor's clock (NTP)",
            )
            return []
        verdict = s.window.accept(rec["seq"], t0, t1)
        if verdict is not None:
            if verdict == "reset":
                m.seq_resets.inc(s.id)
                self._note(
                    "seq_reset", s.id, f"sensor {s.id} restarted its sequence at {rec['seq']}"
                )
            else:
                m.duplicates.inc(s.id)
                return []
        m.records_accepted.inc(s.id)
        out: list[Accepted] = []
        s.last_seen = now
        if not s.online:
            out.append(Accepted(self._set_online(s, True, now, "records")))
        live = now - t1 <= self.late_after_s
        if not live:
            m.late.inc(s.id)
        event = LevelEvent(
            sensor=s.id,
            seq=rec["seq"],
            t0=t0,
            t1=t1,
            laeq=rec["laeq"],
            lafmax=rec["lafmax"],
            lceq=rec["lceq"],
            flags=tuple(rec["flags"]),
            received_at=now,
        )
        out.append(Accepted(event, live))
        return out

    def _summary(self, s: _Sensor, payload: bytes) -> list[Accepted]:
        """A sensor's own minute summary: stored as it is (a repeat replaces), never a trigger."""
        self.metrics.records_in.inc("summary")
        try:
            rec = payloads.decode("summary", payload)
        except ProtocolError as exc:
            self._reject(exc.reason, s.id, str(exc))
            return []
        return [Accepted(SummaryRecord.from_wire(s.id, rec), live=False)]

    def _status(self, s: _Sensor, payload: bytes, now: float) -> list[Accepted]:
        self.metrics.records_in.inc("status")
        try:
            msg = payloads.decode("status", payload)
        except ProtocolError as exc:
            self._reject(exc.reason, s.id, str(exc))
            return []
        online = msg["state"] == "online"
        if online:
            s.last_seen = now
            s.status = msg
        if online == s.online:
            return []
        return [Accepted(self._set_online(s, online, now, "status"))]

    def _light_state(self, group: str, payload: bytes, now: float) -> list[Accepted]:
        self.metrics.records_in.inc("light_state")
        try:
            msg = payloads.decode("light_state", payload)
        except ProtocolError as exc:
            self._reject(exc.reason, UNKNOWN, f"lights {group}: {exc}")
            return []
        event = LightStateEvent(
            group=group,
            level=msg["level"],
            cmd_id=msg.get("cmd_id"),
            source=msg["source"],
            at=now,
        )
        return [Accepted(event)]

    def _set_online(self, s: _Sensor, online: bool, now: float, cause: str) -> StatusEvent:
        if online and not s.online:
            self._online_count += 1
        elif not online and s.online:
            self._online_count -= 1
        s.online = online
        state = "online" if online else "offline"
        self.metrics.sensor_transitions.inc(s.id, state, cause)
        self.metrics.sensors_online.set(self._online_count)
        log.info("sensor %s %s (%s)", s.id, state, cause)
        return StatusEvent(sensor=s.id, online=online, at=now)

    # -- refusals ------------------------------------------------------------

    def _stray(self, topic: str) -> None:
        """A topic outside the configured devices: say which rule it breaks, remember nothing."""
        m = self.metrics
        try:
            _site, kind, ident, leaf = topics.parse(topic)
        except ProtocolError as exc:
            m.records_in.inc("stray")
            self._reject(exc.reason, UNKNOWN, str(exc))
            return
        m.records_in.inc(leaf if kind == "sensors" else f"{kind}_{leaf}")
        if kind == "sensors":
            m.unknown_sensors.inc()
            self._reject("unknown_sensor", UNKNOWN, f"sensor {ident!r} is in no zone")
        elif kind == "lights":
            self._reject("unknown_group", UNKNOWN, f"light group {ident!r} is in no zone")
        else:
            self._reject("unknown_topic", UNKNOWN, f"topic {topic!r} is not the gateway's input")

    def _reject(self, reason: str, sensor: str, why: str) -> None:
        self.metrics.rejects.inc(reason, sensor)
        self._note(reason, sensor, f"refused ({reason}) from {sensor}: {why}")

    def _note(self, reason: str, sensor: str, line: str) -> None:
        # one line per (reason, sensor) per LOG_EVERY_S: a flood must not flood the log
        key = (reason, sensor)
        t = time.monotonic()
        if t - self._logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[key] = t
            log.warning("%s", line[:300])
