"""A simulated pilot: nights of a street whose nudges have a known effect, stored as a gateway does.

A night's levels cannot be recorded ahead of time, so `hushlight demo` plays one
night live and puts in front of it a history of earlier nights drawn from the
street model below, so that `hushlight report` has enough nudges and controls
to show effects with intervals.  The tests of the verdict use the same model:
there the true effect is known, so an interval can be checked against it.

The street model (`simulate`): each night has its own loudness, each episode
its own; the minutes up to the trigger are louder than the ones after it,
nudge or not (regression to the mean, which is why controls are needed).  A
trigger is a control with probability ``control_fraction``, drawn for each
trigger independently, as the policy draws it.  A nudge multiplies the
expected peaks in the minutes after it by ``rate_ratio`` and adds ``shift_db``
to each of those minutes' LAeq: those are the true effects.

`store` writes episodes through the gateway's storage API, the calls the
gateway makes: `record_decision` of the `Nudge` or `Control` and of its
`EpisodeEnded`, and the level records folded into minute rows by
`fold_levels`/`write_minutes`.  Each minute is one record for its quiet
seconds and one 1 s record per peak (LAFmax over the peak threshold), so a
minute row holds the LAeq and the peak count the verdict reads.  Only the
minutes around each trigger are written.

`write_history` is the demo's: `nights` nights before a given one, for every
zone of a site configuration, with each nudge kind's true effect from `TRUTHS`.
Its episode ids start with ``sim-``, so they stay apart from live ones.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from gateway.config import SiteConfig
from gateway.events import LevelEvent
from gateway.policy import Control, EpisodeEnded, Nudge
from gateway.storage import Storage
from gateway.verdict import EpisodeLevels, Minute

__all__ = [
    "FIRST_NIGHT",
    "HISTORY_SEED",
    "MINUTES",
    "TRUTHS",
    "History",
    "Truth",
    "simulate",
    "store",
    "write_history",
]

TZ = ZoneInfo("Europe/Brussels")
FIRST_NIGHT = dt.datetime(2026, 11, 2, 23, 0, tzinfo=TZ)
MINUTES = 10  # minutes written before (the trigger's included) and after each trigger
SENSORS = ("s1", "s2", "s3")
TRIGGERS_PER_NIGHT = 2.7  # the mean of a Poisson count, over the 6 h from 23:00
NIGHT_S = 6 * 3600.0
HOLD_S = 600.0  # a real street's hold: the episode ends this long after its trigger
HISTORY_SEED = 1


@dataclass(frozen=True)
class Truth:
    """What a nudge of one kind really does on the simulated street."""

    rate_ratio: float  # factor on the expected peaks after it (0.7 = 30 % fewer)
    shift_db: float  # dB added to each minute's LAeq after it (-2 = 2 dB quieter)

    def __str__(self) -> str:
        if self.rate_ratio == 1.0 and self.shift_db == 0.0:
            return "no effect"
        peaks = round(100.0 * (1.0 - self.rate_ratio))
        fewer = f"{peaks} % fewer peaks" if peaks >= 0 else f"{-peaks} % more peaks"
        word = "quieter" if self.shift_db <= 0.0 else "louder"
        return f"{fewer}, {abs(self.shift_db):.1f} dB {word}"


# The demo street's true effects, invented for the simulation and stated with it:
# dimming works, brightening barely does.
TRUTHS: Mapping[str, Truth] = {"dim": Truth(0.70, -2.0), "brighten": Truth(0.90, -0.5)}


def simulate(
    seed: int,
    *,
    rate_ratio: float = 1.0,
    shift_db: float = 0.0,
    nights: int = 30,
    control_fraction: float = 0.5,
    zone: str = "ns",
    kind: str = "dim",
    sensors: Sequence[str] = SENSORS,
    first_night: dt.datetime = FIRST_NIGHT,
    per_night: float = TRIGGERS_PER_NIGHT,
    id_prefix: str = "",
) -> list[EpisodeLevels]:
    """Nights of a street from `first_night` on (see the module docstring), oldest first.

    Each night has a Poisson number of triggers (mean `per_night`) at uniform
    times over the six hours from the night's start; each episode carries
    `MINUTES` minutes of every sensor before and after its trigger.
    """
    rng = np.random.default_rng(seed)
    out: list[EpisodeLevels] = []
    for night in range(nights):
        start = first_night + dt.timedelta(days=night)
        night_db = rng.normal(0.0, 3.0)
        times = np.sort(rng.uniform(0.0, NIGHT_S, rng.poisson(per_night)))
        for i, offset in enumerate(times):
            at = (start + dt.timedelta(seconds=float(offset))).timestamp()
            nudged = rng.random() >= control_fraction
            episode_db = rng.normal(0.0, 2.5)
            loud = night_db + episode_db
            sensor_db = rng.normal(0.0, 1.5, len(sensors))
            minute0 = math.floor(at / 60.0) * 60.0
            before, after = [], []
            for m in range(-MINUTES + 1, MINUTES + 1):
                for s, sensor in enumerate(sensors):
                    if m <= 0:  # the trigger's minute and the ones before it
                        laeq = 67.0 + loud + sensor_db[s] + rng.normal(0.0, 2.0)
                        rate = 1.6 * math.exp(loud / 6.0)
                        before.append(
                            Minute(sensor, minute0 + 60 * m, 60.0, laeq, _peaks(rng, rate))
                        )
                    else:  # calmer afterwards, pulled back towards the street's mean
                        laeq = 62.0 + 0.6 * loud + sensor_db[s] + rng.normal(0.0, 2.0)
                        rate = 0.8 * math.exp(0.6 * loud / 6.0)
                        if nudged:
                            laeq += shift_db
                            rate *= rate_ratio
                        after.append(
                            Minute(sensor, minute0 + 60 * m, 60.0, laeq, _peaks(rng, rate))
                        )
            out.append(
                EpisodeLevels(
                    f"{id_prefix}{zone}-{night}-{i}",
                    zone,
                    kind,
                    not nudged,
                    at,
                    tuple(before),
                    tuple(after),
                )
            )
    return out


def _peaks(rng: np.random.Generator, rate: float) -> int:
    # at most one peak a second: a minute has 60 records
    return min(int(rng.poisson(rate)), 60)


def store(
    storage: Storage,
    episodes: Iterable[EpisodeLevels],
    *,
    messages: Mapping[str, Mapping[str, str]] | None = None,
    hold_s: float = HOLD_S,
) -> list[EpisodeLevels]:
    """Write episodes through the storage API (see the module docstring); return those written.

    Oldest first; an episode that would share a sensor's minute with one written
    before it is left out, as a gateway never starts an episode in a zone's
    hold and the minutes of two episodes must not add up.  `messages` are the
    nudges' texts per zone (default: none).
    """
    threshold = storage.peak_threshold_db
    used: set[tuple[str, float]] = set()
    kept: list[EpisodeLevels] = []
    for e in sorted(episodes, key=lambda e: (e.at, e.id)):
        minutes = e.before + e.after
        keys = {(m.sensor, m.minute) for m in minutes}
        if not keys.isdisjoint(used):
            continue
        used |= keys
        kept.append(e)
        sensors = tuple(sorted({m.sensor for m in minutes}))
        trigger = max((m.laeq for m in e.before if m.minute > e.at - 60.0), default=0.0)
        laeq = round(trigger, 2)
        if e.control:
            storage.record_decision(Control(e.zone, e.id, e.at, laeq, e.kind, {}, sensors), e.at)
        else:
            text = dict((messages or {}).get(e.zone, {}))
            nudge = Nudge(e.zone, e.id, e.at, laeq, e.kind, text, {}, sensors)
            storage.record_decision(nudge, e.at)
        storage.fold_levels(_records(minutes, threshold))
        if storage.minutes_due():
            storage.write_minutes()
        end = e.at + hold_s
        storage.record_decision(EpisodeEnded(e.zone, e.id, end, "quiet", e.control), end)
    storage.flush()
    return kept


def _records(minutes: Sequence[Minute], threshold: float) -> list[LevelEvent]:
    """Level records that fold into `minutes`: the quiet seconds in one, a 1 s record per peak."""
    out = []
    for m in minutes:
        quiet = m.dur - m.peaks
        if quiet > 0:
            t1 = m.minute + quiet
            out.append(LevelEvent(m.sensor, 0, m.minute, t1, m.laeq, threshold - 1.0, m.laeq + 3.0))
        for k in range(m.peaks):
            t0 = m.minute + quiet + k
            out.append(LevelEvent(m.sensor, 0, t0, t0 + 1, m.laeq, threshold + 5.0, m.laeq + 3.0))
    return out


@dataclass(frozen=True)
class Arm:
    """The simulated episodes of one zone and kind that were written."""

    zone: str
    kind: str
    truth: Truth
    nudges: int
    controls: int


@dataclass(frozen=True)
class History:
    """What `write_history` wrote."""

    nights: int
    first: dt.date  # the evening of the first night
    last: dt.date
    arms: tuple[Arm, ...]
    seconds: float  # how long the writing took


def write_history(
    database: str | Path,
    config: SiteConfig,
    before: dt.datetime,
    nights: int,
    *,
    seed: int = HISTORY_SEED,
    truths: Mapping[str, Truth] = TRUTHS,
    say: Callable[[str], None] = print,
) -> History:
    """Write `nights` simulated nights ending the night before `before` into `database`.

    Every zone of `config`, with its sensors, control fraction and nudge kinds
    (a kind missing from `truths` has no effect); the triggers of a zone with
    several kinds are shared among them at random, as the policy draws a kind.
    """
    if nights < 1:
        raise ValueError(f"nights {nights!r}: expected at least 1")
    began = time.monotonic()
    first = before - dt.timedelta(days=nights)
    episodes: list[EpisodeLevels] = []
    for zone in config.zones:
        kinds = [kind for kind, _ in zone.variants]
        for kind in kinds:
            truth = truths.get(kind, Truth(1.0, 0.0))
            episodes += simulate(
                zlib.crc32(f"{seed}:{zone.id}:{kind}".encode()),
                rate_ratio=truth.rate_ratio,
                shift_db=truth.shift_db,
                nights=nights,
                control_fraction=zone.control_fraction,
                zone=zone.id,
                kind=kind,
                sensors=zone.sensors,
                first_night=first,
                per_night=TRIGGERS_PER_NIGHT / len(kinds),
                id_prefix=f"sim-{kind}-",
            )
    say(f"writing {nights} simulated earlier nights ({len(episodes)} triggers) into {database} ...")
    messages = {z.id: z.messages for z in config.zones}
    with Storage(
        database, peak_threshold_db=config.storage.peak_threshold_db, timezone=config.timezone
    ) as storage:
        kept = store(storage, episodes, messages=messages)
    arms = []
    for zone in config.zones:
        for kind, _ in zone.variants:
            mine = [e for e in kept if (e.zone, e.kind) == (zone.id, kind)]
            controls = sum(e.control for e in mine)
            truth = truths.get(kind, Truth(1.0, 0.0))
            arms.append(Arm(zone.id, kind, truth, len(mine) - controls, controls))
    return History(
        nights,
        first.date(),
        (before - dt.timedelta(days=1)).date(),
        tuple(arms),
        time.monotonic() - began,
    )
