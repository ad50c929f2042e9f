"""The nudge policy: a pure function from (state, event, clock) to (state, decisions).

No I/O, no clock reads, no global randomness: `step(config, state, event, now)`
returns a new state and the decisions to carry out, so the same history always
gives the same decisions (tests, replays of stored levels, restarts).

Per zone, in order:

1. Every usable level record goes into its sensor's sliding window.  A record
   is not usable for triggering (the service still stores it) when it is
   flagged ``calibrating`` or ``unsynced_time`` (its time stamp means nothing),
   when it is late (``t1`` older than ``now - window_s``: catch-up after an
   outage must not nudge for noise that is over) or from the future, or when
   its sensor is offline.
2. The trigger: ``"laeq"`` fires when at least ``min_sensors`` sensors have an
   energy-mean LAeq over the window >= ``threshold_db``; ``"peaks"`` when at
   least ``min_sensors`` sensors saw LAFmax >= ``threshold_db`` at least
   ``peaks_needed`` times in the window.  Stale sensors (no record for
   ``stale_after_s``) and offline sensors never count.
3. A trigger inside the schedule, outside cooldown and under the hourly cap
   starts an *episode*: with probability ``control_fraction`` a `Control`
   (recorded, nothing sent), otherwise an `Override` per light group and a
   `Nudge`.  The kind (and light level) is drawn among the zone's variants.
   Both draws come from a hash of (seed, zone, trigger number), never from a
   global generator.
4. While the trigger keeps firing the hold extends; overrides are renewed
   `renew_before_s` before they expire, never beyond ``start + max_hold_s`` nor
   past the end of the schedule period.  The episode ends (`Release` of every
   group) when the zone has been quiet for ``hold_s``, at ``max_hold_s``, at the
   end of the schedule period, or when every sensor of the zone is stale or
   offline.  A cooldown follows.  Control episodes run the same clock, so
   nudges and controls are comparable.

Light levels are never below ``floor_level``; every override carries an expiry,
so the lights fall back to their programme by themselves if the gateway dies.

`PolicyState` is immutable (frozen dataclasses, tuples, and mappings that are
never mutated after construction); `state_to_json`/`state_from_json` save and
restore it across restarts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

from gateway import windows
from gateway.config import SiteConfig, ZoneConfig
from gateway.errors import StateError
from gateway.events import Event, LevelEvent, LightStateEvent, StatusEvent, Tick

__all__ = [
    "Control",
    "Decision",
    "EpisodeEnded",
    "Event",
    "LevelEvent",
    "LightStateEvent",
    "Nudge",
    "Override",
    "PolicyState",
    "Release",
    "StatusEvent",
    "Tick",
    "TriggerSuppressed",
    "describe_trigger",
    "explain",
    "initial_state",
    "release_all",
    "release_unowned",
    "replay",
    "state_from_json",
    "state_json_parts",
    "state_to_json",
    "step",
    "zone_status",
]

STATE_VERSION = 1

# Flags that make a record's level or time unusable for a trigger.
NO_TRIGGER_FLAGS = frozenset({"calibrating", "unsynced_time"})

# Levels outside this range (dB) are not sound a street makes; ingest should
# refuse them, and the policy ignores them rather than overflow 10^(L/10).
PLAUSIBLE_DB = (-50.0, 200.0)

# A lighting controller that lost an applied override (reboot) gets it again,
# at most this many times per episode so a broken controller cannot loop us.
MAX_RESENDS = 3


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Override:
    """Set `group` to `level` % over `ramp_s`; the lights return to programme at `expires_at`.

    `reason` is "noise" (a new episode), "renew" (hold extended) or "resend"
    (the controller lost it).  `evidence`: sensor -> the value that triggered
    (LAeq dB for "laeq", peak count for "peaks").
    """

    zone: str
    group: str
    cmd_id: str
    level: float
    ramp_s: float
    expires_at: float
    reason: str
    evidence: Mapping[str, float]
    at: float
    episode: str


@dataclass(frozen=True)
class Release:
    """Return `group` to its programme (``level: null`` on the wire); `cmd_id` is the release's own.

    `reason`: "quiet", "max_hold", "schedule_end" or "sensors_silent".
    """

    zone: str
    group: str
    cmd_id: str
    reason: str
    at: float
    episode: str


@dataclass(frozen=True)
class Nudge:
    """Tell residents and passers-by (zone topic, Web Push); `nudge_id` is unique and stable."""

    zone: str
    nudge_id: str
    at: float
    laeq: float
    kind: str
    message: Mapping[str, str]
    evidence: Mapping[str, float]
    sensors: tuple[str, ...]  # the zone's sensors, for the evaluation report


@dataclass(frozen=True)
class Control:
    """A trigger that fired in a control period: nothing is sent, the levels after are compared."""

    zone: str
    control_id: str
    at: float
    laeq: float
    kind: str  # what would have been done
    evidence: Mapping[str, float]
    sensors: tuple[str, ...]


@dataclass(frozen=True)
class TriggerSuppressed:
    """The trigger fires but no episode may begin; `why`: "cooldown", "hourly_cap" or
    "outside_schedule".  Reported once per loud spell and reason."""

    zone: str
    at: float
    why: str
    laeq: float


@dataclass(frozen=True)
class EpisodeEnded:
    """A nudge or control episode is over (for controls, the only trace of the end)."""

    zone: str
    episode: str
    at: float
    reason: str
    control: bool


Decision = Override | Release | Nudge | Control | TriggerSuppressed | EpisodeEnded


# ---------------------------------------------------------------- state


@dataclass(frozen=True)
class SensorWindow:
    """What the policy knows about one sensor of a zone."""

    online: bool = True  # until a status says otherwise
    last_seen: float | None = None  # arrival of its latest record of any kind
    # usable records in the window, oldest first: (t1, seconds, energy, lafmax) where
    # energy = seconds * 10^(LAeq/10), so the window's LAeq needs no power per look
    recent: tuple[tuple[float, float, float, float], ...] = ()
    # sums over `recent`, valid while none of it has left the window
    energy: float = 0.0
    seconds: float = 0.0
    peaks: int = 0  # records with LAFmax >= the zone's threshold


@dataclass(frozen=True)
class SentOverride:
    """The override currently in force on one light group."""

    group: str
    cmd_id: str
    level: float
    expires_at: float
    acked: bool = False


@dataclass(frozen=True)
class Episode:
    """A nudge (or control) in progress."""

    id: str
    control: bool
    kind: str
    level: float
    started: float
    last_loud: float
    ends_by: float  # min(start + max_hold_s, end of the schedule period)
    overrides: tuple[SentOverride, ...] = ()
    commands: int = 0  # command ids issued so far, to number the next
    resends: int = 0
    evidence: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ZoneState:
    """The policy's memory of one zone."""

    sensors: Mapping[str, SensorWindow] = field(default_factory=dict)
    episode: Episode | None = None
    triggers: int = 0  # episodes started so far: numbers ids and draws
    starts: tuple[float, ...] = ()  # episode starts within the last hour
    cooldown_until: float = -math.inf
    loud: bool = False  # trigger state at the last record
    suppressed: str = ""  # why the current loud spell is held back, to report each reason once


class ZoneMap(Mapping[str, ZoneState]):
    """An immutable zone id -> ZoneState mapping that is cheap to update one zone at a time.

    A record changes one zone; copying a flat dict of every zone per record
    would cost time in proportion to the number of zones (thousands at city
    scale).  The zones are spread over fixed buckets and `updated` copies only
    the buckets that change.
    """

    _BUCKETS = 64

    __slots__ = ("_buckets", "_len")

    def __init__(self, items: Mapping[str, ZoneState] | None = None) -> None:
        buckets: list[dict[str, ZoneState]] = [{} for _ in range(self._BUCKETS)]
        for key, value in (items or {}).items():
            buckets[hash(key) % self._BUCKETS][key] = value
        self._buckets: tuple[dict[str, ZoneState], ...] = tuple(buckets)
        self._len = sum(len(b) for b in buckets)

    def __getitem__(self, key: str) -> ZoneState:
        return self._buckets[hash(key) % self._BUCKETS][key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._buckets[hash(key) % self._BUCKETS].get(key, default)

    def __iter__(self) -> Iterator[str]:
        for bucket in self._buckets:
            yield from bucket

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"ZoneMap({dict(self.items())!r})"

    def updated(self, changes: Mapping[str, ZoneState]) -> ZoneMap:
        """A new map with `changes` applied; this one is left as it was."""
        buckets = list(self._buckets)
        added = 0
        for key, value in changes.items():
            i = hash(key) % self._BUCKETS
            if buckets[i] is self._buckets[i]:
                buckets[i] = dict(buckets[i])
            added += key not in buckets[i]
            buckets[i][key] = value
        new = ZoneMap.__new__(ZoneMap)
        new._buckets = tuple(buckets)
        new._len = self._len + added
        return new


@dataclass(frozen=True)
class PolicyState:
    """Everything the policy remembers; replace, never mutate."""

    seed: int
    zones: Mapping[str, ZoneState]


def initial_state(config: SiteConfig, seed: int = 0) -> PolicyState:
    """A fresh state for `config`; `seed` drives control periods, kinds and ids."""
    return PolicyState(seed=seed, zones=ZoneMap({z.id: ZoneState() for z in config.zones}))


# ---------------------------------------------------------------- step


def step(
    config: SiteConfig, state: PolicyState, event: Event, now: float
) -> tuple[PolicyState, list[Decision]]:
    """Apply one event at time `now` (UTC epoch s); return the new state and the decisions."""
    decisions: list[Decision] = []
    changed: dict[str, ZoneState] = {}
    if isinstance(event, LevelEvent):
        for zid in config.zones_of_sensor.get(event.sensor, ()):
            zone = config.zones_by_id[zid]
            zs = _with_record(config, zone, _zone(state, zid), event, now)
            zs = _advance(config, state.seed, zone, zs, now, decisions)
            changed[zid] = _evaluate(config, state.seed, zone, zs, now, decisions)
    elif isinstance(event, StatusEvent):
        for zid in config.zones_of_sensor.get(event.sensor, ()):
            zone = config.zones_by_id[zid]
            zs = _zone(state, zid)
            old = zs.sensors.get(event.sensor, SensorWindow())
            # offline drops the window: its records must not count once it is gone
            if event.online:
                new = replace(old, online=True)
            else:
                new = SensorWindow(online=False, last_seen=old.last_seen)
            zs = replace(zs, sensors={**zs.sensors, event.sensor: new})
            changed[zid] = _advance(config, state.seed, zone, zs, now, decisions)
    elif isinstance(event, LightStateEvent):
        for zid in config.zones_of_group.get(event.group, ()):
            zone = config.zones_by_id[zid]
            zs = _light_state(state.seed, zone, _zone(state, zid), event, now, decisions)
            changed[zid] = _advance(config, state.seed, zone, zs, now, decisions)
    else:
        for zone in config.zones:
            changed[zone.id] = _advance(
                config, state.seed, zone, _zone(state, zone.id), now, decisions
            )
    return _with_zones(state, changed), decisions


def _with_zones(state: PolicyState, changed: dict[str, ZoneState]) -> PolicyState:
    """`state` with the zones in `changed` replaced (the same object when none changed)."""
    if not changed:
        return state
    zones = state.zones
    if isinstance(zones, ZoneMap):
        return PolicyState(state.seed, zones.updated(changed))
    return PolicyState(state.seed, ZoneMap({**zones, **changed}))


def replay(
    config: SiteConfig,
    events: Iterable[tuple[float, Event]],
    state: PolicyState | None = None,
    seed: int = 0,
) -> tuple[PolicyState, list[Decision]]:
    """Run `step` over (now, event) pairs, e.g. stored history, from `state` or a fresh one."""
    current = initial_state(config, seed) if state is None else state
    decisions: list[Decision] = []
    for now, event in events:
        current, out = step(config, current, event, now)
        decisions += out
    return current, decisions


def release_all(
    config: SiteConfig, state: PolicyState, reason: str, now: float
) -> tuple[PolicyState, list[Decision]]:
    """End every episode at `now` for `reason` (e.g. "shutdown"): a Release for each
    override in force, numbered like every other command of its episode, then its
    EpisodeEnded; each zone starts its cooldown as after any other end."""
    decisions: list[Decision] = []
    changed: dict[str, ZoneState] = {}
    for zid in state.zones:
        zs = state.zones[zid]
        ep = zs.episode
        if ep is None:
            continue
        for o in ep.overrides:
            ep = replace(ep, commands=ep.commands + 1)
            decisions.append(Release(zid, o.group, f"{ep.id}.{ep.commands}", reason, now, ep.id))
        decisions.append(EpisodeEnded(zid, ep.id, now, reason, ep.control))
        cooldown_s = config.zones_by_id[zid].cooldown_s
        changed[zid] = replace(zs, episode=None, cooldown_until=now + cooldown_s)
    return _with_zones(state, changed), decisions


def release_unowned(state: PolicyState, in_force: Iterable[Override], now: float) -> list[Release]:
    """Releases for the overrides in force (`in_force`, as stored) that no episode of
    `state` owns: sent, then the gateway stopped before saving the state that knew them.

    Their episode is unknown, so the next number of its commands is too; the release
    takes the override's id with ".r" appended, which no episode command can have.
    """
    known = {
        o.cmd_id
        for zs in state.zones.values()
        if zs.episode is not None
        for o in zs.episode.overrides
    }
    return [
        Release(o.zone, o.group, f"{o.cmd_id}.r", "restart", now, o.episode)
        for o in in_force
        if o.cmd_id not in known
    ]


def _zone(state: PolicyState, zid: str) -> ZoneState:
    return state.zones.get(zid) or ZoneState()


def _with_record(
    config: SiteConfig, zone: ZoneConfig, zs: ZoneState, ev: LevelEvent, now: float
) -> ZoneState:
    old = zs.sensors.get(ev.sensor) or SensorWindow()
    seen = ev.received_at if ev.received_at else now
    last_seen = seen if old.last_seen is None else max(old.last_seen, seen)
    lo = now - zone.window_s
    recent = windows.prune(old.recent, lo)
    pruned = recent is not old.recent
    added = None
    if (
        old.online
        and (not ev.flags or not NO_TRIGGER_FLAGS.intersection(ev.flags))
        and lo < ev.t1 <= now + zone.window_s
        and PLAUSIBLE_DB[0] <= ev.laeq <= PLAUSIBLE_DB[1]
        and PLAUSIBLE_DB[0] <= ev.lafmax <= PLAUSIBLE_DB[1]
    ):
        # None for a repeat of a time already in the window
        added = windows.add(recent, windows.record(ev.t0, ev.t1, ev.laeq, ev.lafmax))
    if added is not None:
        recent = added
    if added is not None or pruned:
        energy, seconds, peaks = windows.sums(recent, zone.threshold_db)
    else:
        energy, seconds, peaks = old.energy, old.seconds, old.peaks
    new = SensorWindow(old.online, last_seen, recent, energy, seconds, peaks)
    return _zone_with(zs, sensors={**zs.sensors, ev.sensor: new})


# The state's constructors below take every field by position: a call by keyword
# costs about 0.03 us more per field, and these run on every record.  A field
# added to or moved in a dataclass fails tests/gateway/test_policy_rebuilds.py
# until each positional call here lists it in its place.


def _zone_with(
    zs: ZoneState,
    *,
    sensors: Mapping[str, SensorWindow] | None = None,
    loud: bool | None = None,
    suppressed: str | None = None,
) -> ZoneState:
    """`dataclasses.replace` for the fields a record changes, without its introspection."""
    return ZoneState(
        zs.sensors if sensors is None else sensors,
        zs.episode,
        zs.triggers,
        zs.starts,
        zs.cooldown_until,
        zs.loud if loud is None else loud,
        zs.suppressed if suppressed is None else suppressed,
    )


def _still_loud(zs: ZoneState, ep: Episode, now: float) -> ZoneState:
    """`zs` with its episode loud at `now`: `dataclasses.replace` twice, without the
    introspection."""
    episode = Episode(
        ep.id,
        ep.control,
        ep.kind,
        ep.level,
        ep.started,
        now,  # last_loud
        ep.ends_by,
        ep.overrides,
        ep.commands,
        ep.resends,
        ep.evidence,
    )
    return ZoneState(
        zs.sensors, episode, zs.triggers, zs.starts, zs.cooldown_until, zs.loud, zs.suppressed
    )


def _live(config: SiteConfig, w: SensorWindow | None, now: float) -> bool:
    return (
        w is not None
        and w.online
        and w.last_seen is not None
        and now - w.last_seen <= config.stale_after_s
    )


def _measure(
    config: SiteConfig, zone: ZoneConfig, zs: ZoneState, now: float
) -> tuple[bool, float, dict[str, float]]:
    """(fires, loudest LAeq of a qualifying sensor, evidence) for the zone's window at `now`."""
    evidence: dict[str, float] = {}
    loudest = -math.inf
    lo = now - zone.window_s
    hi = now + zone.window_s
    # energy ratio a little under the threshold: only sensors near or over it need a log10
    near = 10.0 ** ((zone.threshold_db - 0.01) / 10.0)
    threshold = zone.threshold_db
    by_laeq = zone.trigger == "laeq"
    peaks_needed = zone.peaks_needed
    stale = config.stale_after_s
    in_zone = zs.sensors
    for sensor in zone.sensors:
        w = in_zone.get(sensor)
        # `_live` inlined: this loop runs for every sensor of the zone per record
        if (
            w is None
            or not w.recent
            or not w.online
            or w.last_seen is None
            or not now - w.last_seen <= stale
        ):
            continue
        recent = w.recent
        if recent[0][0] > lo and recent[-1][0] <= hi:
            energy, seconds, peaks = w.energy, w.seconds, w.peaks
        else:
            # part of the window has left it (its sensor sent nothing since)
            inside = windows.inside(recent, lo, hi)
            if not inside:
                continue
            energy, seconds, peaks = windows.sums(inside, threshold)
        if by_laeq:
            if energy / seconds < near:
                continue
            laeq = windows.laeq(energy, seconds)
            if laeq >= threshold:
                evidence[sensor] = round(laeq, 2)
                loudest = max(loudest, laeq)
        elif peaks >= peaks_needed:
            evidence[sensor] = float(peaks)
            loudest = max(loudest, windows.laeq(energy, seconds))
    fires = len(evidence) >= zone.min_sensors
    return fires, (round(loudest, 2) if evidence else 0.0), evidence


def _evaluate(
    config: SiteConfig,
    seed: int,
    zone: ZoneConfig,
    zs: ZoneState,
    now: float,
    out: list[Decision],
) -> ZoneState:
    fires, laeq, evidence = _measure(config, zone, zs, now)
    if not fires:
        if zs.loud or zs.suppressed:
            return _zone_with(zs, loud=False, suppressed="")
        return zs
    zs = _zone_with(zs, loud=True)
    if zs.episode is not None:
        # noise continues: the hold extends (the renewal happens in _advance)
        return _still_loud(zs, zs.episode, now)
    period = zone.schedule.active_period(now, config.tz)
    starts = tuple(t for t in zs.starts if now - t < 3600.0)
    why = None
    if period is None:
        why = "outside_schedule"
    elif now < zs.cooldown_until:
        why = "cooldown"
    elif len(starts) >= zone.max_nudges_per_hour:
        why = "hourly_cap"
    if period is None or why is not None:
        if why is not None and why != zs.suppressed:
            out.append(TriggerSuppressed(zone.id, now, why, laeq))
            zs = replace(zs, suppressed=why)
        return replace(zs, starts=starts)

    n = zs.triggers + 1
    episode_id = f"{zone.id}-{n}-{_hash(seed, zone.id, n, 'id')[:8]}"
    control = _draw(seed, zone.id, n, "control") < zone.control_fraction
    variants = zone.variants
    kind, level = variants[int(_draw(seed, zone.id, n, "kind") * len(variants))]
    ends_by = min(now + zone.max_hold_s, period[1])
    ep = Episode(
        id=episode_id,
        control=control,
        kind=kind,
        level=level,
        started=now,
        last_loud=now,
        ends_by=ends_by,
        evidence=evidence,
    )
    if control:
        out.append(Control(zone.id, episode_id, now, laeq, kind, evidence, zone.sensors))
    else:
        expires = min(now + zone.hold_s, ends_by)
        sent = []
        for group in zone.light_groups:
            ep, in_force = _send(ep, zone, group, level, expires, "noise", now, out)
            sent.append(in_force)
        ep = replace(ep, overrides=tuple(sent))
        message = dict(zone.messages)
        out.append(Nudge(zone.id, episode_id, now, laeq, kind, message, evidence, zone.sensors))
    return replace(zs, episode=ep, triggers=n, starts=(*starts, now), suppressed="")


def _advance(
    config: SiteConfig,
    seed: int,
    zone: ZoneConfig,
    zs: ZoneState,
    now: float,
    out: list[Decision],
) -> ZoneState:
    """Housekeeping at `now`: end the episode if due, else renew overrides about to expire."""
    ep = zs.episode
    if ep is None:
        return zs
    reason = None
    if not any(_live(config, zs.sensors.get(s), now) for s in zone.sensors):
        reason = "sensors_silent"
    elif now >= ep.ends_by:
        reason = "max_hold" if ep.ends_by >= ep.started + zone.max_hold_s else "schedule_end"
    elif now >= ep.last_loud + zone.hold_s:
        reason = "quiet"
    if reason is not None:
        for o in ep.overrides:
            ep = replace(ep, commands=ep.commands + 1)
            out.append(Release(zone.id, o.group, f"{ep.id}.{ep.commands}", reason, now, ep.id))
        out.append(EpisodeEnded(zone.id, ep.id, now, reason, ep.control))
        return replace(zs, episode=None, cooldown_until=now + zone.cooldown_s)
    want = min(ep.last_loud + zone.hold_s, ep.ends_by)
    before = zone.renew_before_s
    due = [want > o.expires_at and o.expires_at - now <= before for o in ep.overrides]
    if not any(due):
        return zs  # the usual case, on every record of a zone in a nudge: nothing to copy
    renewed = []
    for o, renew in zip(ep.overrides, due, strict=True):
        if renew:
            ep, o = _send(ep, zone, o.group, o.level, want, "renew", now, out)
        renewed.append(o)
    return replace(zs, episode=replace(ep, overrides=tuple(renewed)))


def _light_state(
    seed: int,
    zone: ZoneConfig,
    zs: ZoneState,
    ev: LightStateEvent,
    now: float,
    out: list[Decision],
) -> ZoneState:
    ep = zs.episode
    if ep is None or ep.control:
        return zs
    updated = []
    for o in ep.overrides:
        if o.group == ev.group:
            if ev.source == "override" and ev.cmd_id == o.cmd_id:
                o = replace(o, acked=True)
            elif (
                ev.source == "programme"
                and o.acked
                and now < o.expires_at - 1.0
                and ep.resends < MAX_RESENDS
            ):
                # the controller applied our override and then lost it (restart)
                ep = replace(ep, resends=ep.resends + 1)
                ep, o = _send(ep, zone, o.group, o.level, o.expires_at, "resend", now, out)
        updated.append(o)
    return replace(zs, episode=replace(ep, overrides=tuple(updated)))


def _send(
    ep: Episode,
    zone: ZoneConfig,
    group: str,
    level: float,
    expires_at: float,
    reason: str,
    now: float,
    out: list[Decision],
) -> tuple[Episode, SentOverride]:
    """Number the episode's next command, emit its Override, and return the
    episode with the override that is now in force on `group`."""
    ep = replace(ep, commands=ep.commands + 1)
    cmd_id = f"{ep.id}.{ep.commands}"
    out.append(
        Override(
            zone.id, group, cmd_id, level, zone.ramp_s, expires_at, reason, ep.evidence, now, ep.id
        )
    )
    return ep, SentOverride(group=group, cmd_id=cmd_id, level=level, expires_at=expires_at)


def _hash(seed: int, zone: str, n: int, purpose: str) -> str:
    return hashlib.blake2b(f"{seed}:{zone}:{n}:{purpose}".encode(), digest_size=8).hexdigest()


def _draw(seed: int, zone: str, n: int, purpose: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, zone, trigger number, purpose)."""
    return int(_hash(seed, zone, n, purpose), 16) / 2.0**64


# ---------------------------------------------------------------- views


def zone_status(config: SiteConfig, state: PolicyState, zone_id: str, now: float) -> dict[str, Any]:
    """A JSON-ready summary of one zone for the HTTP API.

    Times are UTC epoch seconds, each with an ISO 8601 twin in the site's time
    zone (``..._iso``); `levels` is what each sensor's window holds now.
    """
    zone = config.zones_by_id[zone_id]
    zs = _zone(state, zone_id)
    ep = zs.episode
    tz = config.tz
    cooldown = zs.cooldown_until if zs.cooldown_until > now else None
    return {
        "zone": zone_id,
        "now": now,
        "now_iso": _iso(now, tz),
        "active_schedule": zone.schedule.is_active(now, tz),
        "schedule": list(zone.schedule.texts),
        "live_sensors": sorted(s for s in zone.sensors if _live(config, zs.sensors.get(s), now)),
        "sensors": list(zone.sensors),
        "trigger": {
            "kind": zone.trigger,
            "threshold_db": zone.threshold_db,
            "window_s": zone.window_s,
            "min_sensors": zone.min_sensors,
            **({"peaks_needed": zone.peaks_needed} if zone.trigger == "peaks" else {}),
        },
        "levels": {s: _sensor_levels(config, zone, zs.sensors.get(s), now) for s in zone.sensors},
        "loud": zs.loud,
        "cooldown_until": cooldown,
        "cooldown_until_iso": None if cooldown is None else _iso(cooldown, tz),
        "nudges_last_hour": sum(1 for t in zs.starts if now - t < 3600.0),
        "episode": None if ep is None else _episode_view(ep, tz),
        "explain": explain(config, state, zone_id, now),
    }


def explain(config: SiteConfig, state: PolicyState, zone_id: str, now: float) -> str:
    """One sentence: what the zone is doing at `now` and, when it is not nudging, why not.

    For an operator wondering why the lights did not change: the trigger's rule,
    what each sensor's window holds against it, and what holds a trigger back
    (schedule, cooldown, hourly cap, silent sensors).
    """
    zone = config.zones_by_id[zone_id]
    zs = _zone(state, zone_id)
    tz = config.tz
    ep = zs.episode
    if ep is not None:
        what = "a control (nothing sent)" if ep.control else f"a nudge ({ep.kind}, {ep.level:g} %)"
        until = min(ep.last_loud + zone.hold_s, ep.ends_by)
        return (
            f"zone {zone_id}: in {what} since {_iso(ep.started, tz)}, held until "
            f"{_iso(until, tz)} unless it stays loud (at most until {_iso(ep.ends_by, tz)})"
        )
    rule = _rule(zone)
    seen = []
    for s in zone.sensors:
        w = zs.sensors.get(s)
        if w is None or w.last_seen is None:
            seen.append(f"{s} never heard")
        elif not w.online:
            seen.append(f"{s} offline")
        elif not _live(config, w, now):
            seen.append(f"{s} silent for {now - w.last_seen:.0f} s")
        else:
            lv = _sensor_levels(config, zone, w, now)
            if lv["laeq"] is None:
                seen.append(f"{s} no usable record in the window")
            elif zone.trigger == "laeq":
                seen.append(f"{s} LAeq {lv['laeq']:.1f}")
            else:
                seen.append(f"{s} {lv['peaks']} peaks (LAFmax up to {lv['lafmax']:.1f})")
    fires, _, evidence = _measure(config, zone, zs, now)
    heard = "; ".join(seen)
    if not fires:
        why = f"not triggering: {rule}; {len(evidence)} of {zone.min_sensors} needed now ({heard})"
    else:
        why = f"triggering ({heard}) but held back: {_held_back(config, zone, zs, now)}"
    if fires or zone.schedule.is_active(now, tz):
        return f"zone {zone_id}: {why}"
    return f"zone {zone_id}: {why}; and {_outside(config, zone, now)}"


def describe_trigger(zone: ZoneConfig, evidence: Mapping[str, float]) -> str:
    """What fired, in the zone's own terms: LAeq values for "laeq", peak counts for "peaks"."""
    if zone.trigger == "laeq":
        values = ", ".join(f"{s} {v:.1f} dB(A)" for s, v in sorted(evidence.items()))
        return f"LAeq over {zone.window_s} s >= {zone.threshold_db:g} dB(A): {values}"
    values = ", ".join(f"{s} {v:.0f}" for s, v in sorted(evidence.items()))
    return f"LAFmax peaks >= {zone.threshold_db:g} dB(A) in {zone.window_s} s: {values}"


def _rule(zone: ZoneConfig) -> str:
    sensors = f"{zone.min_sensors} sensor" + ("s" if zone.min_sensors > 1 else "")
    if zone.trigger == "laeq":
        return (
            f"the trigger needs LAeq over {zone.window_s} s >= {zone.threshold_db:g} dB(A) "
            f"at {sensors}"
        )
    times = f"{zone.peaks_needed} time" + ("s" if zone.peaks_needed > 1 else "")
    return (
        f"the trigger needs LAFmax >= {zone.threshold_db:g} dB(A) {times} in {zone.window_s} s "
        f"at {sensors}"
    )


def _held_back(config: SiteConfig, zone: ZoneConfig, zs: ZoneState, now: float) -> str:
    """Why a trigger that fires would not start an episode now (the order `_evaluate` checks)."""
    if not zone.schedule.is_active(now, config.tz):
        return _outside(config, zone, now)
    if now < zs.cooldown_until:
        return f"cooldown after the last nudge until {_iso(zs.cooldown_until, config.tz)}"
    starts = [t for t in zs.starts if now - t < 3600.0]
    if len(starts) >= zone.max_nudges_per_hour:
        return (
            f"max_nudges_per_hour {zone.max_nudges_per_hour} reached; the next may start at "
            f"{_iso(min(starts) + 3600.0, config.tz)}"
        )
    return "nothing: a nudge starts with the next record"


def _outside(config: SiteConfig, zone: ZoneConfig, now: float) -> str:
    nxt = zone.schedule.next_start(now, config.tz)
    when = "" if nxt is None else f"; next from {_iso(nxt, config.tz)}"
    schedule = ", ".join(zone.schedule.texts)
    return f"outside its schedule ({schedule}, {config.timezone}){when}"


def _sensor_levels(
    config: SiteConfig, zone: ZoneConfig, w: SensorWindow | None, now: float
) -> dict[str, Any]:
    """LAeq, max LAFmax and peaks (LAFmax >= threshold) of one sensor's usable records in
    the zone's window at `now`; None where the window is empty."""
    out: dict[str, Any] = {
        "live": _live(config, w, now),
        "laeq": None,
        "lafmax": None,
        "peaks": 0,
        "last_seen": None,
        "last_seen_iso": None,
    }
    if w is None:
        return out
    if w.last_seen is not None:
        out["last_seen"] = w.last_seen
        out["last_seen_iso"] = _iso(w.last_seen, config.tz)
    inside = windows.inside(w.recent, now - zone.window_s, now + zone.window_s)
    if inside:
        energy, seconds, peaks = windows.sums(inside, zone.threshold_db)
        out["laeq"] = round(windows.laeq(energy, seconds), 2)
        out["lafmax"] = round(max(r[3] for r in inside), 2)
        out["peaks"] = peaks
    return out


def _iso(epoch_s: float, tz: ZoneInfo) -> str:
    return dt.datetime.fromtimestamp(epoch_s, tz).isoformat(timespec="seconds")


def _episode_view(ep: Episode, tz: ZoneInfo) -> dict[str, Any]:
    out = _episode_json(ep)
    for key in ("started", "last_loud", "ends_by"):
        out[f"{key}_iso"] = _iso(out[key], tz)
    for o in out["overrides"]:
        o["expires_at_iso"] = _iso(o["expires_at"], tz)
    return out


# ---------------------------------------------------------------- persistence


def state_to_json(state: PolicyState, *, windows: bool = True) -> str:
    """Serialise `state` (for storage.save_state).

    With ``windows=False`` the sensors' sliding windows are left out: they are
    most of the state (10,000 sensors: 5 MB instead of under 1 MB) and only
    matter for the `window_s` seconds after a restart, during which the zone
    simply needs fresh records before it can trigger again.  Liveness, episodes,
    cooldowns and counters are always kept.
    """
    return "".join(state_json_parts(state, windows=windows))


def state_json_parts(state: PolicyState, *, windows: bool = True) -> Iterator[str]:
    """`state_to_json` in pieces, one zone at a time; joined they are exactly its text.

    JSON of 10,000 sensors takes tens of milliseconds, in C code that keeps
    the GIL: the gateway builds it a few zones per event-loop turn instead of
    stalling every other task (reading MQTT, sending overrides) that long.
    `state` is immutable, so the pieces all describe the same moment.
    """
    yield f'{{"seed": {json.dumps(state.seed)}, "version": {STATE_VERSION}, "zones": {{'
    first = True
    for zid in sorted(state.zones):
        zs = state.zones[zid]
        ep = zs.episode
        zone = {
            "sensors": {
                s: {
                    "online": w.online,
                    "last_seen": w.last_seen,
                    "recent": [list(r) for r in w.recent] if windows else [],
                }
                for s, w in zs.sensors.items()
            },
            "episode": None if ep is None else _episode_json(ep),
            "triggers": zs.triggers,
            "starts": list(zs.starts),
            "cooldown_until": zs.cooldown_until if math.isfinite(zs.cooldown_until) else None,
            "loud": zs.loud,
            "suppressed": zs.suppressed,
        }
        sep = "" if first else ", "
        yield f"{sep}{json.dumps(zid)}: {json.dumps(zone, sort_keys=True)}"
        first = False
    yield "}}"


def _episode_json(ep: Episode) -> dict[str, Any]:
    out = asdict(ep)
    out["evidence"] = dict(ep.evidence)
    return out


def state_from_json(text: str, config: SiteConfig) -> PolicyState:
    """Restore a state saved by `state_to_json`; zones no longer configured are dropped and new
    zones start fresh.  Raise `StateError` if the text is not a saved state."""
    try:
        raw = json.loads(text)
        if raw.get("version") != STATE_VERSION:
            raise StateError(
                f"saved policy state has version {raw.get('version')!r}, this gateway reads "
                f"version {STATE_VERSION}; start with a fresh state"
            )
        zones: dict[str, ZoneState] = {}
        for zone in config.zones:
            z = raw["zones"].get(zone.id)
            zones[zone.id] = ZoneState() if z is None else _zone_from(z, zone)
        return PolicyState(seed=int(raw["seed"]), zones=ZoneMap(zones))
    except StateError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise StateError(
            f"saved policy state is damaged ({type(exc).__name__}: {exc}); start with a fresh state"
        ) from exc


def _zone_from(z: Mapping[str, Any], zone: ZoneConfig) -> ZoneState:
    sensors = {}
    for s, w in z["sensors"].items():
        recent = tuple(
            sorted((float(r[0]), float(r[1]), float(r[2]), float(r[3])) for r in w["recent"])
        )
        energy, seconds, peaks = windows.sums(recent, zone.threshold_db)
        sensors[s] = SensorWindow(
            online=bool(w["online"]),
            last_seen=None if w["last_seen"] is None else float(w["last_seen"]),
            recent=recent,
            energy=energy,
            seconds=seconds,
            peaks=peaks,
        )
    e = z["episode"]
    episode = None
    if e is not None:
        episode = Episode(
            id=str(e["id"]),
            control=bool(e["control"]),
            kind=str(e["kind"]),
            level=float(e["level"]),
            started=float(e["started"]),
            last_loud=float(e["last_loud"]),
            # a max_hold_s shortened in the config since the save applies at once
            ends_by=min(float(e["ends_by"]), float(e["started"]) + zone.max_hold_s),
            overrides=tuple(
                SentOverride(
                    group=str(o["group"]),
                    cmd_id=str(o["cmd_id"]),
                    level=float(o["level"]),
                    expires_at=float(o["expires_at"]),
                    acked=bool(o["acked"]),
                )
                for o in e["overrides"]
            ),
            commands=int(e["commands"]),
            resends=int(e["resends"]),
            evidence={str(k): float(v) for k, v in e["evidence"].items()},
        )
    cooldown = z["cooldown_until"]
    return ZoneState(
        sensors=sensors,
        episode=episode,
        triggers=int(z["triggers"]),
        starts=tuple(float(t) for t in z["starts"]),
        cooldown_until=-math.inf if cooldown is None else float(cooldown),
        loud=bool(z["loud"]),
        suppressed=str(z["suppressed"]),
    )
