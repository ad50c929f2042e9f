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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from gateway.schedule import Schedule

__all__ = ["MAX_SHARE", "Plan", "SensorState", "active_zones", "plan", "zone_limits"]

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
