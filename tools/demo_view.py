"""What the demo shows: the street's state, built from the MQTT traffic, and its rendering.

`Street` takes every message the demo hears on the site's topics (sensor
levels, light commands and states, nudges) with the site time it arrived at,
and keeps what the screen and the final summary need: each sensor's latest
levels and its peak count, each zone's state, each light group's level, the
nudges sent, and how long the lights were dimmed or brightened.  No I/O here:
`tools.demo` feeds it and draws it.

It also answers the questions a first run raises.  Each nudge says what
triggered it in its zone's own terms (peak counts for a peaks zone, LAeq for
an LAeq zone), from the evidence the gateway recorded with the decision
(`on_decisions`, fed from the gateway's ``/api/decisions``).  And each scene
of the night gets a verdict: which zones it nudged and, for the others, how
close the zone's rule came, counted the way the gateway counts it (the
records of each sensor in the zone's window, the k-th best sensor), so that
music that shows bass but stays low A-weighted, or a car that is loud for a
second, is explained rather than silently ignored.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

from protocol import payloads, topics
from protocol.errors import ProtocolError

PEAK_DB = 70.0  # the Leuven pilot's LAFmax threshold
TZ = ZoneInfo("Europe/Brussels")
BAR_W = 12  # the live view's level bar, one # per 4 dB above 35 dB(A)
LABEL_W = 36  # the plain view's scene column: the longest thing `scenes.happening` says
# LCeq - LAeq from here up is bass worth pointing at (speech and traffic give 1-3 dB)
BASS_DB = 10.0
# Sound still arriving after a scripted source stops: the farthest lamp post
# is ~400 m away (1.2 s at 343 m/s), and the meter's 125 ms Fast decay.
TAIL_S = 2.0


@dataclass(frozen=True)
class ZoneRule:
    """A zone's trigger as the gateway's config states it (`gateway.config.ZoneConfig`)."""

    trigger: str  # "laeq" or "peaks"
    threshold_db: float
    window_s: float
    min_sensors: int = 1
    peaks_needed: int = 1

    def needs(self) -> str:
        """The rule in words, e.g. "needs 4 peaks in 30 s at 2 sensors"."""
        at = f"{self.min_sensors} sensor" + ("s" if self.min_sensors > 1 else "")
        if self.trigger == "laeq":
            return f"needs LAeq over {self.window_s:g} s >= {self.threshold_db:g} dB(A) at {at}"
        return f"needs {self.peaks_needed} peaks in {self.window_s:g} s at {at}"

    def what(self) -> str:
        """What the rule measures, e.g. "LAFmax peaks >= 70 dB(A) in 30 s"."""
        if self.trigger == "laeq":
            return f"LAeq over {self.window_s:g} s >= {self.threshold_db:g} dB(A)"
        return f"LAFmax peaks >= {self.threshold_db:g} dB(A) in {self.window_s:g} s"

    def evidence(self, values: Mapping[str, float]) -> str:
        """Each qualifying sensor's value: LAeq in dB(A), or its count of peaks."""
        if self.trigger == "laeq":
            return ", ".join(f"{s} {v:.1f} dB(A)" for s, v in sorted(values.items()))
        return ", ".join(f"{s} {v:.0f}" for s, v in sorted(values.items()))


@dataclass(frozen=True)
class Scene:
    """A scripted part of the night, in site time (UTC epoch s)."""

    name: str
    start: float
    stop: float


@dataclass
class SceneZone:
    """How close one zone's rule came during one scene."""

    best: float = -math.inf  # the k-th best sensor's LAeq over the window, or its peak count
    lafmax: float = -math.inf  # the loudest LAFmax at the zone's sensors


@dataclass
class SensorRow:
    laeq: float | None = None
    lafmax: float | None = None
    lceq: float | None = None
    records: int = 0
    peaks: int = 0
    loudest: float = 0.0
    online: bool = False
    late: int = 0  # records that came in after the shortest zone window had passed them
    last_t1: float = 0.0  # end of the latest record, site time
    # (t1, laeq, lafmax) of the records of the longest zone window
    recent: deque[tuple[float, float, float]] = field(default_factory=deque)


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
    nudge_id: str = ""
    # sensor -> what qualified it: from the gateway's decision, else the demo's own count
    evidence: Mapping[str, float] = field(default_factory=dict)
    from_gateway: bool = False


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
    rules: Mapping[str, ZoneRule] = field(default_factory=dict)  # zone -> its trigger
    scenes: Sequence[Scene] = ()
    scene_zones: dict[tuple[str, str], SceneZone] = field(default_factory=dict)
    bass: dict[str, tuple[float, str]] = field(default_factory=dict)  # scene -> LC-LA, sensor

    def __post_init__(self) -> None:
        self.rows = {s: SensorRow() for s in self.sensors}
        for zone, (_, groups) in self.zones.items():
            for g in groups:
                self.groups[g] = GroupRow(zone, self.programme, self.programme)
        peaks = [r for r in self.rules.values() if r.trigger == "peaks"]
        # the peaks column counts what a peaks zone counts, over its window
        self.peak_db = peaks[0].threshold_db if peaks else PEAK_DB
        self.peak_window_s = max((r.window_s for r in peaks or self.rules.values()), default=30.0)
        self._keep_s = max([self.peak_window_s, *(r.window_s for r in self.rules.values())])
        # a record older than this when it comes is outside the shortest zone window
        self._late_s = min([self.peak_window_s, *(r.window_s for r in self.rules.values())])

    def on_message(self, topic: str, payload: bytes, now: float) -> None:
        """Account for one message that arrived at site time `now`; bad ones are counted."""
        try:
            site, kind, ident, leaf = topics.parse(topic)
            if site != self.site:
                return
            if kind == "sensors" and ident in self.rows:
                self._sensor(ident, leaf, payload, now)
            elif kind == "lights" and ident in self.groups:
                self._light(ident, leaf, payload, now)
            elif kind == "zones" and leaf == "nudge":
                n = payloads.decode_nudge(payload)
                text = n["message"].get("en") or next(iter(n["message"].values()), "")
                rule = self.rules.get(n["zone"])
                # the demo's own count, until the gateway's evidence comes (`on_decisions`)
                seen = self._measure(n["zone"], rule, now)[1] if rule is not None else {}
                self.nudges.append(
                    Nudge(
                        n["at"] / 1000, n["zone"], n["laeq"], n["kind"], text, n["nudge_id"], seen
                    )
                )
        except ProtocolError:
            self.rejected += 1

    def on_decisions(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Take each nudge's evidence from the gateway's decisions (``GET /api/decisions``)."""
        found = {
            r.get("nudge_id"): r.get("evidence")
            for r in rows
            if r.get("type") == "Nudge" and isinstance(r.get("evidence"), dict)
        }
        for i, n in enumerate(self.nudges):
            evidence = found.get(n.nudge_id)
            if not n.from_gateway and evidence is not None:
                try:
                    values = {str(s): float(v) for s, v in evidence.items()}
                except (TypeError, ValueError):
                    continue
                self.nudges[i] = replace(n, evidence=values, from_gateway=True)

    def _sensor(self, sensor: str, leaf: str, payload: bytes, now: float) -> None:
        row = self.rows[sensor]
        if leaf == "levels":
            rec = payloads.decode_levels(payload)
            row.laeq, row.lafmax, row.lceq = rec["laeq"], rec["lafmax"], rec["lceq"]
            row.records += 1
            row.last_t1 = max(row.last_t1, rec["t1"] / 1000)
            row.loudest = max(row.loudest, rec["lafmax"])
            row.peaks += rec["lafmax"] >= self.peak_db
            t1 = rec["t1"] / 1000
            row.late += now - t1 > self._late_s
            row.recent.append((t1, rec["laeq"], rec["lafmax"]))
            while row.recent[0][0] <= t1 - self._keep_s:
                row.recent.popleft()
            self._account(sensor, rec["t0"] / 1000, t1, rec)
        elif leaf == "status":
            row.online = payloads.decode_status(payload)["state"] == "online"

    # ---- what each zone's rule sees -------------------------------------

    def _measure(self, zone: str, rule: ZoneRule, now: float) -> tuple[float, dict[str, float]]:
        """(the k-th best sensor's value, the qualifying sensors' values) in the window at `now`.

        The value is the gateway's: a sensor's LAeq over the window's records,
        or its count of records with LAFmax >= the threshold; k is min_sensors.
        """
        values: dict[str, float] = {}
        for s in self.zones[zone][0]:
            row = self.rows.get(s)
            inside = [r for r in row.recent if r[0] > now - rule.window_s] if row else []
            if not inside:
                continue
            if rule.trigger == "laeq":
                energy = sum(10.0 ** (r[1] / 10.0) for r in inside) / len(inside)
                values[s] = round(10.0 * math.log10(energy), 2)
            else:
                values[s] = float(sum(r[2] >= rule.threshold_db for r in inside))
        ranked = sorted(values.values(), reverse=True)
        k = rule.min_sensors
        floor = -math.inf if rule.trigger == "laeq" else 0.0
        best = ranked[k - 1] if len(ranked) >= k else floor
        need = rule.threshold_db if rule.trigger == "laeq" else rule.peaks_needed
        return best, {s: v for s, v in values.items() if v >= need}

    def scene_at(self, lo: float, hi: float) -> Scene | None:
        """The latest scene sounding in (lo, hi], its tail included."""
        found = None
        for scene in self.scenes:
            if scene.start <= hi and scene.stop + TAIL_S > lo:
                found = scene
        return found

    def _account(self, sensor: str, t0: float, t1: float, rec: Mapping[str, Any]) -> None:
        """Fold one record into the scene it belongs to, for the scene's verdict."""
        sounding = self.scene_at(t0, t0)
        if sounding is not None:
            bass = rec["lceq"] - rec["laeq"]
            if sounding.name not in self.bass or bass > self.bass[sounding.name][0]:
                self.bass[sounding.name] = (bass, sensor)
        for zone, (sensors, _) in self.zones.items():
            rule = self.rules.get(zone)
            if rule is None or sensor not in sensors:
                continue
            # the window that ends with this record: the scene in it is what the rule hears
            scene = self.scene_at(t1 - rule.window_s, t1)
            if scene is None:
                continue
            acc = self.scene_zones.setdefault((scene.name, zone), SceneZone())
            acc.best = max(acc.best, self._measure(zone, rule, t1)[0])
            if sounding is scene:
                acc.lafmax = max(acc.lafmax, rec["lafmax"])

    def settled(self, scene: Scene, now: float) -> bool:
        """Whether `scene`'s sound has left every zone's window by `now`: its verdict is final."""
        return now >= scene.stop + TAIL_S + self._keep_s

    def scene_of(self, nudge: Nudge) -> Scene | None:
        """The scene whose sound filled the zone's window when the nudge was sent."""
        rule = self.rules.get(nudge.zone)
        return self.scene_at(nudge.at - (rule.window_s if rule else 0.0), nudge.at)

    def nudge_line(self, n: Nudge) -> str:
        """What was done and what triggered it, in the zone's own terms."""
        rule = self.rules.get(n.zone)
        if rule is None:
            why = f"LAeq {n.laeq:.1f} dB(A)"
        elif n.evidence:
            why = f"{rule.what()}: {rule.evidence(n.evidence)} ({rule.needs()})"
            if not n.from_gateway:
                why += " [counted by the demo: the gateway's evidence is not in]"
        else:
            why = rule.what()
        return f"{clock(n.at)} {n.zone}: {n.kind} the lights: {why}"

    def verdict(self, scene: Scene) -> list[str]:
        """What the scene did to each zone and, where it drew no nudge, why not."""
        nudged: dict[str, Nudge] = {}
        for n in self.nudges:
            if self.scene_of(n) is scene:
                nudged.setdefault(n.zone, n)
        span = f"{scene.name} ({clock(scene.start)}-{clock(scene.stop)})"
        if nudged:
            # in the site's zone order, not the order the nudges happened to come in
            order = [z for z in self.zones if z in nudged]
            order += [z for z in nudged if z not in self.zones]
            done = ", ".join(f"{z} ({nudged[z].kind} at {clock(nudged[z].at)})" for z in order)
            lines = [f"{span}: nudged {done}"]
        else:
            lines = [f"{span}: no nudge"]
        others = [z for z in self.zones if z not in nudged and z in self.rules]
        bass = self.bass.get(scene.name)
        if others and bass is not None and bass[0] >= BASS_DB:
            lines.append(
                f"  LCeq - LAeq up to {bass[0]:+.1f} dB at {bass[1]}: bass, which A-weighting "
                "discounts; the zones' rules are A-weighted (as the Leuven pilot's was), "
                "so bass alone does not nudge"
            )
        for z in others:
            acc = self.scene_zones.get((scene.name, z))
            if acc is None:
                lines.append(f"  {z}: no records from its sensors")
                continue
            lines.append(f"  {z}: {self._came(self.rules[z], acc)}; {self.rules[z].needs()}")
        return lines

    @staticmethod
    def _came(rule: ZoneRule, acc: SceneZone) -> str:
        at_once = f" at {rule.min_sensors} sensors at once" if rule.min_sensors > 1 else ""
        loudest = f"LAFmax up to {acc.lafmax:.1f} dB(A)"
        if rule.trigger == "laeq":
            return f"LAeq over {rule.window_s:g} s up to {acc.best:.1f} dB(A){at_once} ({loudest})"
        if acc.lafmax < rule.threshold_db:
            return f"{loudest}, no peak >= {rule.threshold_db:g} dB(A)"
        return (
            f"{loudest}, but at most {max(acc.best, 0.0):.0f} peaks in "
            f"{rule.window_s:g} s{at_once}: too short"
        )

    # ---- lights ---------------------------------------------------------

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
                return f"NUDGE {kind} {level:g}% to {clock(cmd['expires_at'])}"
        rule = self.rules.get(zone)
        if rule is None:
            loud = [self.rows[s].laeq or 0.0 for s in sensors]
            return f"watching (loudest LAeq {max(loud):.1f} dB(A))"
        # what the rule sees now "of" what it needs, short enough for an 80-column terminal
        best = self._measure(zone, rule, now)[0]
        k = rule.min_sensors
        at = f"{k} sensor" + ("s" if k > 1 else "")
        if rule.trigger == "laeq":
            shown = f"{best:4.1f}" if best > -math.inf else "  - "
            return f"LAeq/{rule.window_s:g} s {shown} of {rule.threshold_db:g}, {at}"
        return f"{best:2.0f} of {rule.peaks_needed} peaks/{rule.window_s:g} s, {at}"

    def light_minutes(self) -> str:
        """How long each light group spent away from its programme, in one line."""
        parts = []
        for g, row in self.groups.items():
            away = [
                f"{what} {seconds / 60:.1f} min"
                for what, seconds in (("dimmed", row.dimmed_s), ("brightened", row.brightened_s))
                if seconds > 0
            ]
            parts.append(f"{g} ({row.zone}) " + (" and ".join(away) or "on its programme"))
        return "light minutes away from the programme: " + "; ".join(parts)

    def summary(self, next_steps: Sequence[str] = ()) -> list[str]:
        lines = [f"nudges sent: {len(self.nudges)}"]
        lines += [f"  {self.nudge_line(n)}" for n in self.nudges]
        messages = sorted({n.message for n in self.nudges})
        if messages:
            lines.append("  the nudges' message: " + " / ".join(map(repr, messages)))
        if self.scenes:
            lines.append("what each part of the night did:")
            lines += [f"  {line}" for scene in self.scenes for line in self.verdict(scene)]
        lines.append(self.light_minutes())
        peaks = ", ".join(f"{s} {r.peaks}" for s, r in self.rows.items())
        lines.append(f"peaks (seconds with LAFmax >= {self.peak_db:g} dB(A)), whole run: {peaks}")
        lines.append(f"records received: {sum(r.records for r in self.rows.values())}")
        late = ", ".join(f"{s} {r.late}" for s, r in self.rows.items() if r.late)
        if late:
            lines.append(
                f"records that came in more than {self._late_s:g} s after their second, too "
                f"late for the zones' windows: {late} (a backlog after an outage, or a "
                "machine that could not keep up with the speed: try a lower --speed)"
            )
        if next_steps:
            lines.append("next:")
            lines += [f"  {step}" for step in next_steps]
        return lines

    def progress(self, now: float, happening: str) -> str:
        """One plain line: time, scene, each sensor's LAeq/LCeq, each light group's level."""

        def db(value: float | None) -> str:
            return "  -" if value is None else f"{value:3.0f}"

        levels = " ".join(f"{s[-2:]} {db(r.laeq)}/{db(r.lceq)}" for s, r in self.rows.items())
        lights = " ".join(
            f"{g} {(r.level if r.level is not None else r.programme):3.0f}%"
            for g, r in self.groups.items()
        )
        scene = happening[:LABEL_W].ljust(LABEL_W)
        return f"{clock(now)} | {scene} | LAeq/LCeq {levels} | {lights}"

    def render(self, now: float, happening: str, note: str) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        # Every column has a fixed width, so that the frames do not jump as values
        # change, and the whole fits an 80-column terminal.
        window = f"{self.peak_window_s:g} s"
        sensors = Table(
            title="sensors along Naamsestraat",
            caption=(
                f"peaks: seconds with LAFmax >= {self.peak_db:g} dB(A), "
                f"in the last {window} and since the start"
            ),
        )
        for column, width in [
            ("sensor", 6),
            ("LAeq\ndB(A)", 5),
            ("", BAR_W),
            ("LAFmax\ndB(A)", 6),
            ("LCeq\ndB(C)", 5),
            ("LCeq-\nLAeq", 5),
            (f"peaks\n{window}", 5),
            ("peaks\ntotal", 5),
        ]:
            sensors.add_column(
                column,
                width=width,
                no_wrap=True,
                justify="left" if column in ("sensor", "") else "right",
            )
        for s, r in self.rows.items():
            recent = sum(
                1 for t1, _, f in r.recent if t1 > now - self.peak_window_s and f >= self.peak_db
            )
            if r.laeq is None:
                sensors.add_row(s, "-", "", "-", "-", "-", "0", "0")
                continue
            bar = "#" * max(0, min(BAR_W, int((r.laeq - 35) / 4)))
            style = "red" if (r.lafmax or 0) >= self.peak_db else "green"
            sensors.add_row(
                s,
                f"{r.laeq:5.1f}",
                Text(bar.ljust(BAR_W), style=style),
                f"{r.lafmax:5.1f}",
                f"{r.lceq:5.1f}" if r.lceq is not None else "-",
                f"{(r.lceq or 0) - r.laeq:+5.1f}",
                str(recent),
                str(r.peaks),
            )
        zones = Table(
            title="zones and lights",
            caption="state: what the zone's rule sees now, of what it needs to nudge",
        )
        for column, width in [("zone", 11), ("state", 32), ("lights", 10), ("level", 10)]:
            zones.add_column(column, width=width, no_wrap=True, overflow="ellipsis")
        for zone, (_, groups) in self.zones.items():
            for g in groups:
                row = self.groups[g]
                level = row.level if row.level is not None else row.programme
                bar = "=" * int(level / 20)
                zones.add_row(zone, self.zone_state(zone, now), g, f"{level:3.0f}% {bar}")
        latest = [self.nudge_line(n) for n in self.nudges[-3:]]
        nudges = Text("nudges: " + ("\n        ".join(latest) if latest else "none yet"))
        settled = [scene for scene in self.scenes if self.settled(scene, now)]
        parts: list[Any] = [Text(f"{clock(now)} in Leuven  |  {happening}", style="bold")]
        parts += [sensors, zones, nudges]
        if settled:  # the latest part of the night that is over; the summary has them all
            parts.append(Text("\n".join(self.verdict(settled[-1]))))
        parts.append(Text(note, style="dim"))
        return Panel(Group(*parts), title="hushlight demo")


def clock(epoch_s: float) -> str:
    """Local time in Leuven, HH:MM:SS."""
    return time.strftime("%H:%M:%S", _local(epoch_s))


def _local(epoch_s: float) -> time.struct_time:
    from datetime import datetime

    return datetime.fromtimestamp(epoch_s, TZ).timetuple()
