"""`hushlight ota`: roll a signed release out to a site's sensors, a few at a time.

The plan (`plan`, a pure function, tested on its own):

- the sensors to update: those named with ``--sensors`` (default: every
  sensor of the site config and every sensor with a status on the broker),
  minus those already on the release's version or newer, those offline or
  never heard of, and those busy with another update; each skipped one is
  listed with the reason;
- canaries first (``--canary N``, default 1, or ``--canary ID,ID``): the
  release goes to them alone, and if one refuses it or rolls back the
  roll-out halts there, before any wave;
- then waves: at most ``--max-share`` (default 0.34, at least one sensor) of
  each zone's sensors update at once, a sensor in several zones counting in
  each, so a zone never loses more than that share of its ears while their
  new firmware boots and proves itself.

Updating reboots a sensor, so by default the roll-out does not start while a
zone it touches is in its active hours (the zone's schedule in the site
config, when nudges may be due); ``--now`` overrides that.

The release is offered through `tools.ota_serve.ReleaseServer`, which also
serves each sensor its bytes; the sensors' statuses say how each one is
doing (staging -> staged -> trial -> confirmed, or refused / rolled_back with
a reason).  A rolled-back sensor in a wave also stops the waves after it
(the release fails somewhere a canary did not show); a sensor that refuses
the release in a wave (its flash is full, say) does not.  Exit status 0
only if every planned sensor confirmed the new version.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol import topics
from tools.errors import ToolError, UsageError
from tools.fleet import (
    WAIT_S,
    BrokerLogin,
    Seen,
    add_broker_arguments,
    broker_login,
    collect,
)

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from gateway.schedule import Schedule
    from tools.release import Bundle

__all__ = [
    "HELP",
    "MAX_SHARE",
    "Plan",
    "Report",
    "Rollout",
    "SensorState",
    "active_zones",
    "configure",
    "plan",
    "run",
    "zone_limits",
]

HELP = "roll a release out to a site's sensors: canaries first, then waves a zone can spare"

MAX_SHARE = 0.34
CANARIES = 1
BUSY = ("staging", "staged", "trial")


# ---- the plan (pure) ------------------------------------------------------------


@dataclass(frozen=True)
class SensorState:
    """What the plan needs to know of a sensor, from its latest status."""

    online: bool
    fw: str | None = None
    ota: str | None = None
    ota_version: str | None = None


@dataclass(frozen=True)
class Plan:
    version: str
    limits: Mapping[str, int]  # zone -> sensors that may update at once
    canaries: tuple[tuple[str, ...], ...]  # the canary phase, in waves (usually one)
    waves: tuple[tuple[str, ...], ...]
    skipped: Mapping[str, str] = field(default_factory=dict)  # sensor -> why

    @property
    def sensors(self) -> tuple[str, ...]:
        """Every sensor the plan updates, in order."""
        return tuple(s for wave in self.canaries + self.waves for s in wave)


def zone_limits(zones: Mapping[str, Sequence[str]], max_share: float) -> dict[str, int]:
    """zone -> how many of its sensors may update at once: `max_share` of
    them rounded down, at least one."""
    if not 0 < max_share <= 1:
        raise ValueError(f"max share {max_share:g} is not in (0, 1]")
    # a hair of tolerance: 0.34 of 3 sensors is 1.02 -> 1, but 1/3 of 3 must be 1, not 0
    return {z: max(1, math.floor(max_share * len(s) + 1e-9)) for z, s in zones.items()}


def _version(text: str | None) -> tuple[int, ...] | None:
    from protocol.errors import ProtocolError
    from protocol.ota import parse_version

    try:
        return parse_version(text)
    except ProtocolError:
        return None


def _skip_reason(version: str, state: SensorState | None) -> str | None:
    """Why a sensor is left out, or None to update it."""
    if state is None:
        return "no status on the broker (never connected, or not this site)"
    target = _version(version)
    running = _version(state.fw)
    if running is not None and target is not None:
        if running == target:
            return f"already on {version}"
        if running > target:
            return f"runs {state.fw}, newer than {version}"
    if not state.online:
        return "offline"
    if state.ota in BUSY and state.ota_version != version:
        return f"busy with another update ({state.ota} {state.ota_version})"
    return None


def _pack(
    sensors: Sequence[str],
    zones_of: Mapping[str, Sequence[str]],
    limits: Mapping[str, int],
) -> tuple[tuple[str, ...], ...]:
    """`sensors` in waves, none holding more than a zone's limit of its
    sensors: first fit, sensors in the most zones placed first (they are the
    hardest to fit), then by id."""
    order = sorted(sensors, key=lambda s: (-len(zones_of.get(s, ())), s))
    waves: list[list[str]] = []
    used: list[dict[str, int]] = []  # per wave: zone -> its sensors in the wave
    for s in order:
        mine = zones_of.get(s, ())
        fits = [i for i, count in enumerate(used) if all(count.get(z, 0) < limits[z] for z in mine)]
        if fits:
            i = fits[0]
        else:
            i = len(waves)
            waves.append([])
            used.append({})
        waves[i].append(s)
        for z in mine:
            used[i][z] = used[i].get(z, 0) + 1
    return tuple(tuple(sorted(w)) for w in waves)


def plan(
    version: str,
    fleet: Mapping[str, SensorState],
    zones: Mapping[str, Sequence[str]],
    *,
    sensors: Sequence[str] | None = None,
    canary: int | Sequence[str] = CANARIES,
    max_share: float = MAX_SHARE,
) -> Plan:
    """The roll-out of `version`: canaries, then waves, and what is skipped.

    `fleet`: sensor -> its state (sensors without a status are absent);
    `zones`: zone -> its sensors (the site config); `sensors`: the sensors
    asked for (default: those of the zones and of `fleet`); `canary`: how
    many canaries the plan picks, or which.  ValueError for a canary that is
    not among the sensors to update.
    """
    limits = zone_limits(zones, max_share)
    zones_of: dict[str, list[str]] = {}
    for z, members in zones.items():
        for s in members:
            zones_of.setdefault(s, []).append(z)
    wanted = sorted(set(sensors) if sensors is not None else set(zones_of) | set(fleet))
    skipped: dict[str, str] = {}
    todo: list[str] = []
    for s in wanted:
        why = _skip_reason(version, fleet.get(s))
        if why is None:
            todo.append(s)
        else:
            skipped[s] = why
    if isinstance(canary, int):
        if canary < 0:
            raise ValueError(f"canary count {canary} is negative")
        # the canaries a zone misses least: sensors in the fewest zones
        picked = sorted(todo, key=lambda s: (len(zones_of.get(s, ())), s))[:canary]
    else:
        picked = list(dict.fromkeys(canary))
        for s in picked:
            if s not in todo:
                why = skipped.get(s, "not among the sensors asked for")
                raise ValueError(f"canary {s} is not among the sensors to update ({why})")
    rest = [s for s in todo if s not in picked]
    return Plan(
        version=version,
        limits=limits,
        canaries=_pack(picked, zones_of, limits),
        waves=_pack(rest, zones_of, limits),
        skipped=skipped,
    )


def active_zones(
    zones: Sequence[str], schedules: Mapping[str, Schedule], tz: ZoneInfo, at: float
) -> list[tuple[str, str, float]]:
    """The zones among `zones` in their active hours at `at` (UTC epoch s):
    (zone, its windows as written, end of the active period), in order."""
    out = []
    for z in zones:
        schedule = schedules.get(z)
        period = schedule.active_period(at, tz) if schedule is not None else None
        if schedule is not None and period is not None:
            out.append((z, ", ".join(schedule.texts), period[1]))
    return out


# ---- following the sensors ----------------------------------------------------------

# seconds without a new state or a byte served before a sensor counts as stuck
STALL_S = 60.0
# seconds after an offer with no answer before it is sent again (QoS 1, but the
# sensor may have been reconnecting)
REOFFER_S = 10.0
# seconds a sensor may stay in trial before the roll-out gives up on it: the
# firmware's own trial time (ota_trial_s, default 120 s) and a reboot's margin
TRIAL_TIMEOUT_S = 180.0
TICK_S = 0.25
CANCEL_WAIT_S = 2.0
HALT_ADVICE = (
    "No further sensor was offered the release; those not reached run their version "
    "unchanged, and a sensor that rolled back is on its previous version by itself. "
    "Read the reason above (`hushlight fleet` shows it too), fix the cause (a new release "
    "with a higher version for a fault in the firmware), then run `hushlight ota` again: "
    "sensors already on the version are skipped."
)
# "went_offline": offline when its turn came, so never offered the release
DONE = ("confirmed", "refused", "rolled_back", "timed_out", "went_offline")


@dataclass
class Track:
    """One sensor's update as the roll-out follows it."""

    sensor: str
    phase: str  # "canary" or "wave N"
    initial: tuple[str | None, str | None]  # (ota, ota_version) before the offer
    state: str = "waiting"  # "waiting", "offered", then the ota states of its status
    reason: str | None = None
    fw: str | None = None
    served: int = 0
    offered_at: float | None = None
    last_offer: float = 0.0
    changed_at: float = 0.0  # last new state or byte (monotonic)
    trial_at: float | None = None
    ended_at: float | None = None
    busy_seen: bool = False  # a staging/staged/trial state for this release arrived

    @property
    def outcome(self) -> str | None:
        return self.state if self.state in DONE else None


def follow(track: Track, status: Mapping[str, object], version: str, now: float) -> str | None:
    """Take one live status of the sensor into `track`; the new state if it
    changed (for the progress lines), else None.  Pure but for `track`."""
    if track.outcome is not None or track.offered_at is None:
        return None
    fw = status.get("fw")
    if isinstance(fw, str):
        track.fw = fw
    ota = status.get("ota")
    if status.get("state") == "offline":
        ota = "offline"  # the last will: rebooting, or gone
    elif not isinstance(ota, str) or status.get("ota_version") != version:
        return None  # about nothing, or about another release
    reason = status.get("ota_reason")
    if ota in BUSY:
        track.busy_seen = True
    elif ota in ("refused", "rolled_back", "confirmed"):
        # a verdict already there before the offer (a previous attempt) is
        # no answer to this one until the sensor has started on it again
        if not track.busy_seen and (ota, version) == track.initial:
            return None
        if ota == "confirmed" and isinstance(fw, str) and fw != version:
            return None
    elif ota != "offline":
        return None  # idle: not an answer yet
    if ota == track.state:
        return None
    track.state = ota
    track.reason = reason if isinstance(reason, str) else None
    track.changed_at = now
    if ota == "trial":
        track.trial_at = now
    if ota in DONE:
        track.ended_at = now
    return ota


def overdue(track: Track, now: float, stall_s: float, trial_timeout_s: float) -> str | None:
    """Why the roll-out gives up on a sensor now, or None."""
    if track.outcome is not None or track.offered_at is None:
        return None
    if track.trial_at is not None and track.state in ("trial", "offline"):
        if now - track.trial_at > trial_timeout_s:
            return f"not confirmed within {trial_timeout_s:g} s of starting its trial"
        return None
    if now - track.changed_at > stall_s:
        if track.state != "offered":
            what = f"stuck in {track.state}"
        elif track.served:
            what = "took bytes but sent no update status"
        else:
            what = "did not answer the offer"
        return f"{what}: nothing for {stall_s:g} s ({track.served:,} bytes served)"
    return None


@dataclass
class Phase:
    name: str
    sensors: tuple[str, ...]
    started_at: float | None = None
    ended_at: float | None = None


@dataclass
class Report:
    """What the roll-out did: per sensor, per phase, and why it halted."""

    version: str
    tracks: dict[str, Track]
    phases: list[Phase]
    skipped: Mapping[str, str]
    limits: Mapping[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    halted: str | None = None

    def count(self, outcome: str) -> int:
        return sum(t.outcome == outcome for t in self.tracks.values())

    @property
    def ok(self) -> bool:
        return all(t.outcome == "confirmed" for t in self.tracks.values())

    def line(self) -> str:
        not_started = sum(t.state == "waiting" for t in self.tracks.values())
        parts = [
            f"updated {self.count('confirmed')} of {len(self.tracks)} to {self.version}",
            f"refused {self.count('refused')}",
            f"rolled back {self.count('rolled_back')}",
            f"timed out {self.count('timed_out')}",
            f"went offline {self.count('went_offline')}",
            f"not started {not_started}",
            f"skipped {len(self.skipped)}",
            f"took {self.seconds:.1f} s",
        ]
        return ", ".join(parts)

    def as_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "limits": dict(self.limits),
            "ok": self.ok,
            "halted": self.halted,
            "seconds": round(self.seconds, 2),
            "phases": [
                {
                    "name": p.name,
                    "sensors": list(p.sensors),
                    "seconds": None
                    if p.started_at is None or p.ended_at is None
                    else round(p.ended_at - p.started_at, 2),
                }
                for p in self.phases
            ],
            "sensors": {
                s: {
                    "phase": t.phase,
                    "outcome": t.outcome or ("not_started" if t.offered_at is None else t.state),
                    "reason": t.reason,
                    "fw": t.fw,
                    "bytes_served": t.served,
                    "seconds": None
                    if t.offered_at is None or t.ended_at is None
                    else round(t.ended_at - t.offered_at, 2),
                }
                for s, t in self.tracks.items()
            },
            "skipped": dict(self.skipped),
        }


def phases_of(p: Plan) -> list[Phase]:
    out = [
        Phase("canary" if len(p.canaries) == 1 else f"canary {i}", w)
        for i, w in enumerate(p.canaries, 1)
    ]
    out += [Phase(f"wave {i}", w) for i, w in enumerate(p.waves, 1)]
    return out


class Screen:
    """Progress for people: a line per state change, and with a terminal rich
    progress bars (bytes served to each sensor of the phase, sensors done)."""

    def __init__(
        self, total_sensors: int, release_bytes: int, *, bars: bool, to_stderr: bool
    ) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self.stream = sys.stderr if to_stderr else sys.stdout
        self.console = Console(file=self.stream, highlight=False)
        self.release_bytes = release_bytes
        self.total_sensors = total_sensors
        self.progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            TextColumn("{task.fields[amount]}"),
            console=self.console,
            disable=not bars,
            transient=False,
        )
        self.done_task = self.progress.add_task(
            "sensors done", total=total_sensors, amount=f"0/{total_sensors}"
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> Screen:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def say(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        if self.progress.disable:
            print(f"{stamp} {line}", file=self.stream, flush=True)
        else:
            self.progress.console.print(f"{stamp} {line}", markup=False)

    def track(self, t: Track) -> None:
        task = self.tasks.get(t.sensor)
        text = f"{t.sensor} {t.state}"
        served = min(t.served, self.release_bytes)
        amount = f"{served / 1024:.1f}/{self.release_bytes / 1024:.1f} KiB"
        if task is None:
            self.tasks[t.sensor] = self.progress.add_task(
                text, total=self.release_bytes, completed=served, amount=amount
            )
        else:
            self.progress.update(task, description=text, completed=served, amount=amount)

    def finished(self, count: int) -> None:
        self.progress.update(
            self.done_task, completed=count, amount=f"{count}/{self.total_sensors}"
        )

    def drop(self, sensor: str) -> None:
        task = self.tasks.pop(sensor, None)
        if task is not None:
            self.progress.remove_task(task)


class Rollout:
    """Runs a plan: offers the release phase by phase through the release
    server, follows the statuses, halts on a failed canary."""

    def __init__(
        self,
        login: BrokerLogin,
        site: str,
        bundle: Bundle,
        the_plan: Plan,
        fleet: Mapping[str, SensorState],
        screen: Screen,
        *,
        trial_timeout_s: float = TRIAL_TIMEOUT_S,
        stall_s: float = STALL_S,
    ) -> None:
        self.login = login
        self.site = site
        self.bundle = bundle
        self.version = the_plan.version
        self.screen = screen
        self.trial_timeout_s = trial_timeout_s
        self.stall_s = stall_s
        self.phases = phases_of(the_plan)
        tracks = {}
        for phase in self.phases:
            for s in phase.sensors:
                st = fleet.get(s)
                initial = (st.ota, st.ota_version) if st is not None else (None, None)
                tracks[s] = Track(s, phase.name, initial)
        self.report = Report(self.version, tracks, self.phases, the_plan.skipped, the_plan.limits)
        self.changed = asyncio.Event()

    # -- the broker side ------------------------------------------------------

    def _on_status(self, sensor: str, status: dict[str, Any]) -> None:
        track = self.report.tracks.get(sensor)
        if track is None:
            return
        if follow(track, status, self.version, time.monotonic()) is not None:
            self._said(track)
            self.changed.set()

    def _said(self, t: Track) -> None:
        reason = f": {t.reason}" if t.reason else ""
        took = ""
        if t.ended_at is not None and t.offered_at is not None:
            took = f" after {t.ended_at - t.offered_at:.1f} s"
        self.screen.say(f"{t.sensor} ({t.phase}): {t.state} {self.version}{reason}{took}")
        self.screen.track(t)

    async def run(self) -> Report:
        from tools.ota_serve import ReleaseServer

        server = ReleaseServer(self.site, [self.bundle])
        server.on_status.append(self._on_status)
        start = time.monotonic()
        login = self.login
        try:
            async with server.connect(login.url, login.username, login.password, login.ca):
                try:
                    await self._phases(server)
                finally:
                    await self._cancel_staging(server)
        except ToolError as exc:
            self.report.halted = str(exc)
        self.report.seconds = time.monotonic() - start
        return self.report

    async def _phases(self, server: Any) -> None:
        done = 0
        for phase in self.phases:
            phase.started_at = time.monotonic()
            names = ", ".join(phase.sensors)
            self.screen.say(f"{phase.name}: offering {self.version} to {names}")
            for s in phase.sensors:
                t = self.report.tracks[s]
                if server.statuses.get(s, {}).get("state") == "offline":
                    t.state, t.reason = "went_offline", "offline when its turn came; not offered"
                    self._said(t)
                    continue
                await self._offer(server, t)
            await self._wait_phase(server, phase)
            phase.ended_at = time.monotonic()
            tracks = [self.report.tracks[s] for s in phase.sensors]
            done += len(tracks)
            self.screen.finished(done)
            for t in tracks:
                self.screen.drop(t.sensor)
            self.screen.say(f"{phase.name}: done in {phase.ended_at - phase.started_at:.1f} s")
            failed = [t for t in tracks if t.outcome != "confirmed"]
            if phase.name.startswith("canary") and failed:
                self.report.halted = "; ".join(
                    f"canary {t.sensor} {t.outcome.replace('_', ' ') if t.outcome else t.state}"
                    f"{': ' + t.reason if t.reason else ''}"
                    for t in failed
                )
                return
            broken = [t for t in failed if t.outcome in ("rolled_back", "timed_out")]
            if broken:
                self.report.halted = "; ".join(
                    f"{t.sensor} ({t.phase}) {(t.outcome or '').replace('_', ' ')}"
                    f"{': ' + t.reason if t.reason else ''}"
                    for t in broken
                )
                return

    async def _offer(self, server: Any, t: Track) -> None:
        now = time.monotonic()
        t.offered_at = t.changed_at = t.last_offer = now
        t.state = "offered"
        self.screen.track(t)
        await server.offer(t.sensor, self.version)

    async def _wait_phase(self, server: Any, phase: Phase) -> None:
        tracks = [self.report.tracks[s] for s in phase.sensors]
        while any(t.outcome is None for t in tracks):
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), TICK_S)
            now = time.monotonic()
            for t in tracks:
                served = server.progress(t.sensor)[0]
                if served != t.served:
                    t.served = served
                    t.changed_at = now
                    self.screen.track(t)
                if t.state == "offered" and not t.served and now - t.last_offer > REOFFER_S:
                    t.last_offer = now  # no answer yet: the sensor may have been reconnecting
                    await server.offer(t.sensor, self.version)
                why = overdue(t, now, self.stall_s, self.trial_timeout_s)
                if why is not None:
                    t.state, t.reason, t.ended_at = "timed_out", why, now
                    self._said(t)

    async def _cancel_staging(self, server: Any) -> None:
        """Tells the sensors still receiving the release to drop it (Ctrl-C, a
        sensor given up on): a staging nobody serves would hold its slot."""
        for t in self.report.tracks.values():
            staging = t.state in ("offered", "staging") or (
                t.state == "timed_out" and t.trial_at is None
            )
            if staging:
                # the link may be down: a cancel is a courtesy, not worth a hang
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.cancel(t.sensor), CANCEL_WAIT_S)


# ---- the command -------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--release",
        type=Path,
        required=True,
        metavar="DIR",
        help="the release bundle (the hushlight-VERSION folder `hushlight release` wrote)",
    )
    parser.add_argument(
        "--pub",
        type=Path,
        default=Path("release.pub"),
        metavar="FILE",
        help="the city's public release key the bundle is checked against before anything "
        "is offered (default: release.pub in the current folder)",
    )
    add_broker_arguments(parser)
    parser.add_argument(
        "--config",
        type=Path,
        required=True,
        metavar="FILE",
        help="the site config (TOML): its zones and their schedules",
    )
    parser.add_argument(
        "--sensors", metavar="IDS", help="only these sensors, comma-separated (default: all)"
    )
    parser.add_argument(
        "--canary",
        default=str(CANARIES),
        metavar="N|IDS",
        help=f"how many canaries go first, or which (comma-separated ids; default {CANARIES}, "
        "0 for none); a canary that refuses or rolls back halts the roll-out",
    )
    parser.add_argument(
        "--max-share",
        type=float,
        default=MAX_SHARE,
        metavar="F",
        help=f"the share of each zone's sensors updating at once (default {MAX_SHARE:g}; "
        "at least one sensor)",
    )
    parser.add_argument(
        "--now",
        action="store_true",
        help="start even inside a zone's active hours (updating reboots sensors)",
    )
    parser.add_argument(
        "--trial-timeout",
        type=float,
        default=TRIAL_TIMEOUT_S,
        metavar="S",
        help=f"seconds a sensor may take to confirm its trial (default {TRIAL_TIMEOUT_S:g}; "
        "the sensor rolls back by itself after its ota_trial_s, 120 s by default)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=WAIT_S,
        metavar="S",
        help=f"seconds to collect the sensors' statuses first (default {WAIT_S:g})",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON (progress on stderr)"
    )


def _ids(text: str, what: str) -> list[str]:
    ids = [i.strip() for i in text.split(",") if i.strip()]
    bad = [i for i in ids if not topics.valid_id(i)]
    if not ids or bad:
        raise UsageError(
            f"{what} {text!r}: give sensor ids ([a-z0-9-], 1 to 32 characters) separated by commas"
        )
    return ids


def _canary(text: str) -> int | list[str]:
    if text.strip().isdigit():
        return int(text)
    return _ids(text, "--canary")


def _check(args: argparse.Namespace) -> None:
    if not 0 < args.max_share <= 1:
        raise UsageError(
            f"--max-share {args.max_share:g} is out of range; give a fraction in (0, 1], e.g. 0.34"
        )
    if not 0 < args.trial_timeout <= 3600:
        raise UsageError(
            f"--trial-timeout {args.trial_timeout:g} is out of range; give 1 to 3600 s"
        )
    if not 0 < args.wait <= 60:
        raise UsageError(f"--wait {args.wait:g} is out of range; give 0 to 60 seconds")


def _bundle(args: argparse.Namespace) -> Bundle:
    from tools.release import BundleError, check_bundle

    if not args.pub.is_file():
        raise UsageError(
            f"--pub {args.pub}: no such file; give the city's public release key (release.pub, "
            "written by `hushlight keygen`), against which the bundle is checked"
        )
    try:
        return check_bundle(args.release, args.pub)
    except BundleError as exc:
        raise UsageError(str(exc)) from None


def _fleet(seen: Mapping[str, Seen]) -> dict[str, SensorState]:
    out = {}
    for sensor, s in seen.items():
        st = s.status
        out[sensor] = SensorState(
            online=st.get("state") == "online",
            fw=st.get("fw") if isinstance(st.get("fw"), str) else None,
            ota=st.get("ota") if isinstance(st.get("ota"), str) else None,
            ota_version=st.get("ota_version") if isinstance(st.get("ota_version"), str) else None,
        )
    return out


def describe(p: Plan) -> list[str]:
    """The plan in lines for people."""
    lines = [
        f"release {p.version}: {len(p.sensors)} sensors to update; at once at most "
        + ", ".join(f"{n} of zone {z}" for z, n in sorted(p.limits.items()))
    ]
    for phase in phases_of(p):
        lines.append(f"  {phase.name}: {', '.join(phase.sensors)}")
    for s, why in sorted(p.skipped.items()):
        lines.append(f"  skipped {s}: {why}")
    return lines


def render(report: Report, stream: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    stream = stream or sys.stdout
    out = Table(title=f"roll-out of {report.version}")
    for column in ("sensor", "phase", "result", "fw", "bytes", "time", "reason"):
        out.add_column(column, no_wrap=column != "reason")
    for s, t in report.tracks.items():
        result = t.outcome or ("not started" if t.offered_at is None else t.state)
        colour = "green" if result == "confirmed" else "red"
        took = (
            "-"
            if t.offered_at is None or t.ended_at is None
            else f"{t.ended_at - t.offered_at:.1f} s"
        )
        out.add_row(
            s,
            t.phase,
            f"[{colour}]{result.replace('_', ' ')}[/{colour}]",
            t.fw or "-",
            f"{t.served:,}",
            took,
            t.reason or "",
        )
    for s, why in sorted(report.skipped.items()):
        out.add_row(s, "-", "skipped", "-", "-", "-", why)
    width = None if stream.isatty() else 150
    Console(file=stream, soft_wrap=False, width=width).print(out)


def run(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.errors import ConfigError

    login = broker_login(args)
    _check(args)
    canary = _canary(args.canary)
    wanted = _ids(args.sensors, "--sensors") if args.sensors else None
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if config.site_id != args.site:
        raise UsageError(
            f"--config {args.config} is the site {config.site_id!r}, not --site {args.site!r}; "
            "give the config of the site to update"
        )
    bundle = _bundle(args)
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    say(
        f"release {bundle.version} checked against {args.pub}: {len(bundle.files)} files, "
        f"{bundle.total:,} bytes"
    )
    seen = asyncio.run(collect(login, args.site, args.wait))
    fleet = _fleet(seen)
    zones = {z.id: z.sensors for z in config.zones}
    if wanted is not None:
        unknown = [s for s in wanted if s not in fleet and s not in config.zones_of_sensor]
        if unknown:
            raise UsageError(
                f"--sensors: {', '.join(unknown)} neither in {args.config} nor on the broker "
                f"{args.broker} for site {args.site}; check the ids with `hushlight fleet`"
            )
    try:
        the_plan = plan(
            bundle.version, fleet, zones, sensors=wanted, canary=canary, max_share=args.max_share
        )
    except ValueError as exc:
        raise UsageError(f"--canary: {exc}") from None
    for line in describe(the_plan):
        say(line)
    touched = sorted({z for s in the_plan.sensors for z in config.zones_of_sensor.get(s, ())})
    busy = active_zones(touched, {z.id: z.schedule for z in config.zones}, config.tz, time.time())
    if busy and not args.now:
        zones_text = "; ".join(
            f"zone {zone} ({window}, until "
            f"{dt.datetime.fromtimestamp(until, config.tz).strftime('%H:%M')})"
            for zone, window, until in busy
        )
        raise UsageError(
            f"inside active hours ({config.timezone}): {zones_text}; updating reboots sensors "
            "while nudges may be due: start after that, or give --now"
        )
    if not the_plan.sensors:
        say("nothing to update")
        if args.json:
            print(json.dumps(Report(bundle.version, {}, [], the_plan.skipped).as_json(), indent=2))
        return 0
    bars = not args.json and sys.stdout.isatty()
    screen = Screen(len(the_plan.sensors), bundle.total, bars=bars, to_stderr=args.json)
    rollout = Rollout(
        login, args.site, bundle, the_plan, fleet, screen, trial_timeout_s=args.trial_timeout
    )
    try:
        with screen:
            report = asyncio.run(rollout.run())
    except KeyboardInterrupt:
        print(
            "hushlight ota: interrupted; the sensors still receiving the release were told "
            "to drop it, those on trial finish it by themselves; run the same command again "
            "to go on (sensors already on the version are skipped)",
            file=sys.stderr,
        )
        return 130
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        render(report)
        print(report.line())
        if report.halted:
            print(f"halted: {report.halted}")
            print(HALT_ADVICE)
    return 0 if report.ok else 1
