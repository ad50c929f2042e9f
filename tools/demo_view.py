"""What the demo shows: the street's state, built from the MQTT traffic, and its rendering.

`Street` takes every message the demo hears on the site's topics (sensor
levels, light commands and states, nudges) with the site time it arrived at,
and keeps what the screen and the final summary need: each sensor's latest
levels and its peak count, each zone's state, each light group's level, the
nudges sent, and how long the lights were dimmed or brightened.  No I/O here:
`tools.demo` feeds it and draws it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from protocol import payloads, topics
from protocol.errors import ProtocolError

PEAK_DB = 70.0  # the Leuven pilot's LAFmax threshold
TZ = ZoneInfo("Europe/Brussels")


@dataclass
class SensorRow:
    laeq: float | None = None
    lafmax: float | None = None
    lceq: float | None = None
    records: int = 0
    peaks: int = 0
    loudest: float = 0.0
    online: bool = False
    last_t1: float = 0.0  # end of the latest record, site time


@dataclass
class GroupRow:
    zone: str
    programme: float
    level: float | None = None
    source: str = "programme"
    # site time since when the group has been away from its programme level
    since: float | None = None
    dimmed_s: float = 0.0
    brightened_s: float = 0.0
    heard: bool = False  # a state came from the lighting controller


@dataclass(frozen=True)
class Nudge:
    at: float  # site time, UTC epoch s
    zone: str
    laeq: float
    kind: str
    message: str


@dataclass
class Street:
    site: str
    sensors: Sequence[str]
    zones: dict[str, tuple[Sequence[str], Sequence[str]]]  # zone -> (sensors, light groups)
    programme: float = 70.0
    rows: dict[str, SensorRow] = field(default_factory=dict)
    groups: dict[str, GroupRow] = field(default_factory=dict)
    nudges: list[Nudge] = field(default_factory=list)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # group -> last set
    rejected: int = 0

    def __post_init__(self) -> None:
        self.rows = {s: SensorRow() for s in self.sensors}
        for zone, (_, groups) in self.zones.items():
            for g in groups:
                self.groups[g] = GroupRow(zone, self.programme, self.programme)

    def on_message(self, topic: str, payload: bytes, now: float) -> None:
        """Account for one message that arrived at site time `now`; bad ones are counted."""
        try:
            site, kind, ident, leaf = topics.parse(topic)
            if site != self.site:
                return
            if kind == "sensors" and ident in self.rows:
                self._sensor(ident, leaf, payload)
            elif kind == "lights" and ident in self.groups:
                self._light(ident, leaf, payload, now)
            elif kind == "zones" and leaf == "nudge":
                n = payloads.decode_nudge(payload)
                text = n["message"].get("en") or next(iter(n["message"].values()), "")
                self.nudges.append(Nudge(n["at"] / 1000, n["zone"], n["laeq"], n["kind"], text))
        except ProtocolError:
            self.rejected += 1

    def _sensor(self, sensor: str, leaf: str, payload: bytes) -> None:
        row = self.rows[sensor]
        if leaf == "levels":
            rec = payloads.decode_levels(payload)
            row.laeq, row.lafmax, row.lceq = rec["laeq"], rec["lafmax"], rec["lceq"]
            row.records += 1
            row.last_t1 = max(row.last_t1, rec["t1"] / 1000)
            row.loudest = max(row.loudest, rec["lafmax"])
            row.peaks += rec["lafmax"] >= PEAK_DB
        elif leaf == "status":
            row.online = payloads.decode_status(payload)["state"] == "online"

    def _light(self, group: str, leaf: str, payload: bytes, now: float) -> None:
        row = self.groups[group]
        if leaf == "set":
            self.overrides[group] = payloads.decode_light_set(payload)
            return
        if leaf != "state":
            return
        state = payloads.decode_light_state(payload)
        row.heard = True
        self._close(row, now)
        row.level = state["level"]
        row.source = state["source"]
        row.since = now if row.level is not None and row.level != row.programme else None

    @staticmethod
    def _close(row: GroupRow, now: float) -> None:
        if row.since is None or row.level is None:
            return
        if row.level < row.programme:
            row.dimmed_s += now - row.since
        elif row.level > row.programme:
            row.brightened_s += now - row.since
        row.since = now

    def finish(self, now: float) -> None:
        """Close the light-time accounts at the end of the night."""
        for row in self.groups.values():
            self._close(row, now)

    def zone_state(self, zone: str, now: float) -> str:
        sensors, groups = self.zones[zone]
        for g in groups:
            cmd = self.overrides.get(g)
            if cmd is not None and cmd.get("level") is not None and cmd["expires_at"] > now:
                level = cmd["level"]
                kind = "dim" if level < self.groups[g].programme else "brighten"
                return f"NUDGE: {kind} to {level:g}% (expires {clock(cmd['expires_at'])})"
        loud = [self.rows[s].laeq or 0.0 for s in sensors]
        return f"watching (loudest LAeq {max(loud):.1f} dB(A))"

    def summary(self) -> list[str]:
        lines = [f"nudges sent: {len(self.nudges)}"]
        lines += [
            f"  {clock(n.at)} {n.zone}: {n.kind} (LAeq {n.laeq:.1f} dB(A)) {n.message!r}"
            for n in self.nudges
        ]
        for g, row in self.groups.items():
            lines.append(
                f"light group {g} ({row.zone}): dimmed {row.dimmed_s / 60:.1f} min, "
                f"brightened {row.brightened_s / 60:.1f} min"
            )
        dimmed = sum(r.dimmed_s for r in self.groups.values()) / 60
        lines.append(f"light minutes dimmed: {dimmed:.1f}")
        peaks = ", ".join(f"{s} {r.peaks}" for s, r in self.rows.items())
        lines.append(f"peaks (LAFmax >= {PEAK_DB:g} dB(A)): {peaks}")
        lines.append(f"records received: {sum(r.records for r in self.rows.values())}")
        return lines

    def render(self, now: float, happening: str, note: str) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        sensors = Table(title="sensors along Naamsestraat", expand=True)
        for column in ("sensor", "LAeq dB(A)", "", "LAFmax", "LCeq-LAeq", "peaks"):
            sensors.add_column(column)
        for s, r in self.rows.items():
            if r.laeq is None:
                sensors.add_row(s, "-", "", "-", "-", "0")
                continue
            bar = "#" * max(0, min(30, int((r.laeq - 35) / 1.5)))
            style = "red" if (r.lafmax or 0) >= PEAK_DB else "green"
            sensors.add_row(
                s,
                f"{r.laeq:5.1f}",
                f"[{style}]{bar}[/{style}]",
                f"{r.lafmax:5.1f}",
                f"{(r.lceq or 0) - r.laeq:+5.1f}",
                str(r.peaks),
            )
        zones = Table(title="zones and lights", expand=True)
        for column in ("zone", "state", "lights", "level"):
            zones.add_column(column)
        for zone, (_, groups) in self.zones.items():
            for g in groups:
                row = self.groups[g]
                level = row.level if row.level is not None else row.programme
                bar = "=" * int(level / 4)
                zones.add_row(zone, self.zone_state(zone, now), g, f"{level:5.1f}% {bar}")
        recent = [f"{clock(n.at)} {n.zone}: {n.kind} -> {n.message!r}" for n in self.nudges[-4:]]
        nudges = Text("nudges: " + ("\n        ".join(recent) if recent else "none yet"))
        head = Text(f"{clock(now)} in Leuven  |  {happening}", style="bold")
        return Panel(
            Group(head, sensors, zones, nudges, Text(note, style="dim")), title="hushlight demo"
        )


def clock(epoch_s: float) -> str:
    """Local time in Leuven, HH:MM:SS."""
    return time.strftime("%H:%M:%S", _local(epoch_s))


def _local(epoch_s: float) -> time.struct_time:
    from datetime import datetime

    return datetime.fromtimestamp(epoch_s, TZ).timetuple()
