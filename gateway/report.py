"""The verdict on the nudges, read from the gateway's database.

The statistics are `gateway.verdict`'s; this module reads the episodes and
their minutes and words the result (`hushlight report`, tools/report.py,
prints and plots it).  For every stored episode (a nudge, or a control: the
trigger fired and nothing was sent) it reads the minute levels of the zone's
sensors in the minutes before the trigger (rows whose start lies in
``[at - N min, at)``, so the trigger's own minute) and after it
(``[at, at + N min)``), N = 10 by default; minutes flagged as calibrating (a
test tone) are left out.

Per zone and nudge kind the report holds the effect of a nudge against its
controls on the peaks (LAFmax >= the peak threshold, per sensor) as a change
in %, and on LAeq in dB, each with a 95 % interval and a p-value, the counts,
the smallest effect the data could detect, and whether nudges and controls
fell at the same hours and nights; with too little data it says how many more
episodes are needed.  The JSON-ready dict also keeps the plain means after
nudges and after controls and their difference (no adjustment, no interval),
for comparison with older reports.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.storage import EpisodeRow, MinuteRow, Storage
from gateway.verdict import MIN_PER_ARM, Effect, EpisodeLevels, Minute, Verdict, measures, verdicts

__all__ = ["GroupStats", "as_dict", "compute", "describe", "read_episodes", "site_tz"]


@dataclass(frozen=True)
class GroupStats:
    """Nudges or controls of one zone and kind: plain means after them, no adjustment."""

    count: int
    with_data: int
    mean_laeq_after: float | None
    mean_peaks_after: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "with_data": self.with_data,
            "mean_laeq_after": _r(self.mean_laeq_after),
            "mean_peaks_after": _r(self.mean_peaks_after),
        }


def stats(episodes: list[EpisodeLevels]) -> GroupStats:
    """Count and plain means after a group of episodes."""
    after = [m for e in episodes if (m := measures(e.after)) is not None]
    return GroupStats(
        count=len(episodes),
        with_data=len(after),
        mean_laeq_after=sum(m[0] for m in after) / len(after) if after else None,
        mean_peaks_after=sum(m[1] for m in after) / len(after) if after else None,
    )


def read_episodes(
    storage: Storage,
    since: float | None = None,
    zone: str | None = None,
    minutes: int = 10,
    until: float | None = None,
) -> list[EpisodeLevels]:
    """The stored episodes (from `since`, before `until`) with their minutes before and after."""
    out = []
    for ep in storage.episodes(since=since, zone=zone):
        if until is not None and ep.at >= until:
            continue
        span = 60.0 * minutes
        out.append(
            EpisodeLevels(
                ep.id,
                ep.zone,
                ep.kind,
                ep.control,
                ep.at,
                _minutes(storage, ep, ep.at - span, ep.at),
                _minutes(storage, ep, ep.at, ep.at + span),
            )
        )
    return out


def _minutes(storage: Storage, ep: EpisodeRow, start: float, end: float) -> tuple[Minute, ...]:
    rows: list[MinuteRow] = storage.minute_levels(ep.sensors, start, end)
    return tuple(Minute(r.sensor, r.minute, r.dur, r.laeq, r.peaks) for r in rows)


def compute(
    storage: Storage,
    since: float | None = None,
    zone: str | None = None,
    minutes: int = 10,
    *,
    until: float | None = None,
    tz: str | None = None,
    target_peaks: float = 0.20,
    target_db: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """The report as a JSON-ready dict: one row per (zone, kind).

    Hours and nights are the site's (`tz`, by default the time zone the gateway
    stored in the database).
    """
    zone_info = ZoneInfo(tz) if tz is not None else site_tz(storage)
    episodes = read_episodes(storage, since, zone, minutes, until)
    found = verdicts(
        episodes, tz=zone_info.key, target_peaks=target_peaks, target_db=target_db, seed=seed
    )
    return as_dict(
        episodes, found, storage.peak_threshold_db, minutes, since, until, zone, zone_info
    )


def as_dict(
    episodes: list[EpisodeLevels],
    found: list[Verdict],
    peak_threshold_db: float,
    minutes: int,
    since: float | None,
    until: float | None,
    zone: str | None,
    tz: ZoneInfo,
) -> dict[str, Any]:
    """The verdicts and the plain means, JSON-ready."""
    groups: dict[tuple[str, str], dict[bool, list[EpisodeLevels]]] = {}
    for ep in episodes:
        groups.setdefault((ep.zone, ep.kind), {False: [], True: []})[ep.control].append(ep)
    rows = []
    for v in found:
        by_control = groups[(v.zone, v.kind)]
        nudges, controls = stats(by_control[False]), stats(by_control[True])
        rows.append(
            {
                "zone": v.zone,
                "kind": v.kind,
                "text": describe(v, minutes),
                "nudges": nudges.as_dict(),
                "controls": controls.as_dict(),
                "difference": {
                    "laeq_db": _r(_diff(nudges.mean_laeq_after, controls.mean_laeq_after)),
                    "peaks": _r(_diff(nudges.mean_peaks_after, controls.mean_peaks_after)),
                },
                "analysed": {
                    "nudges": v.nudges_analysed,
                    "controls": v.controls_analysed,
                    "nights": v.nights,
                },
                "more_needed": v.more_needed,
                "peaks": _effect_dict(v.peaks),
                "laeq": _effect_dict(v.laeq),
                "balance": None
                if v.balance is None
                else {**{k: _r(x) for k, x in asdict(v.balance).items()}, "ok": v.balance.ok},
            }
        )
    first = min((e.at for e in episodes), default=None)
    last = max((e.at for e in episodes), default=None)
    return {
        "minutes_after": minutes,
        "minutes_before": minutes,
        "peak_threshold_db": peak_threshold_db,
        # epoch seconds for programs, ISO 8601 in the site's time zone for people
        "timezone": tz.key,
        "since": since,
        "since_iso": _iso(since, tz),
        "until": until,
        "until_iso": _iso(until, tz),
        "first_episode_at": first,
        "first_episode_at_iso": _iso(first, tz),
        "last_episode_at": last,
        "last_episode_at_iso": _iso(last, tz),
        "zone": zone,
        "rows": rows,
    }


def _effect_dict(e: Effect | None) -> dict[str, Any] | None:
    if e is None:
        return None
    d = asdict(e)
    return {k: _r(x) if isinstance(x, float) else x for k, x in d.items()}


# ---------------------------------------------------------------- plain words


def describe(v: Verdict, minutes: int) -> list[str]:
    """The verdict of one zone and kind in plain sentences, the first line naming it."""
    head = f"{v.zone}, {v.kind}: {_n(v.nudges, 'nudge')} vs {_n(v.controls, 'control')}" + (
        f" on {_n(v.nights, 'night')}" if v.nights else ""
    )
    left_out = v.nudges + v.controls - v.nudges_analysed - v.controls_analysed
    if left_out:
        head += f" ({left_out} without levels before or after left out)"
    lines = [head]
    if v.peaks is None or v.laeq is None:
        lines.append(
            f"  not enough data yet: need about {v.more_needed} more episodes "
            f"(at least {MIN_PER_ARM} nudges and {MIN_PER_ARM} controls with levels before "
            "and after them)"
        )
        if v.controls == 0:
            lines.append(
                "  no controls recorded: set control_fraction (e.g. 0.3) in the zone's config; "
                "without controls the effect of a nudge cannot be told from chance"
            )
        return lines
    lines.append(f"  peaks: {_peaks_sentence(v.peaks, minutes)}")
    lines.append(f"  LAeq: {_laeq_sentence(v.laeq, minutes)}")
    detectable = []
    if v.peaks.mde is not None:
        detectable.append(f"{_pct(1.0 - v.peaks.mde)} % fewer peaks")
    if v.laeq.mde is not None:
        detectable.append(f"{v.laeq.mde:.1f} dB")
    if detectable:
        lines.append(f"  detectable with these episodes (80 % power): {', '.join(detectable)}")
    for e, goal in (
        (v.peaks, f"{_pct(1.0 - v.peaks.target)} % fewer peaks"),
        (v.laeq, f"{v.laeq.target:g} dB"),
    ):
        if e.more_needed:
            lines.append(
                f"  not enough data yet to detect {goal}: need about {e.more_needed} more episodes"
            )
    b = v.balance
    if b is not None:
        hours = f"mean {_clock(b.hour_nudges)} vs {_clock(b.hour_controls)}"
        if b.ok:
            lines.append(
                f"  balance: nudges and controls at the same hours ({hours}), on the same nights "
                "and after equally loud minutes"
            )
        else:
            odd = [
                what
                for what, p in (
                    (f"hours ({hours}, p = {_p(b.p_hours)})", b.p_hours),
                    (f"nights (p = {_p(b.p_nights)})", b.p_nights),
                    (f"LAeq before (p = {_p(b.p_laeq_before)})", b.p_laeq_before),
                    (f"peaks before (p = {_p(b.p_peaks_before)})", b.p_peaks_before),
                )
                if p < 0.01
            ]
            lines.append(
                "  balance: CHECK the control labels: nudges and controls differ in "
                + ", ".join(odd)
                + "; random labels rarely do"
            )
    return lines


def _peaks_sentence(e: Effect, minutes: int) -> str:
    if e.estimate is None:
        return f"no figure: {e.note}"
    low, high = e.low, e.high
    # a ratio under 1 is a reduction: the interval reads from the smallest reduction up
    if high is not None and high <= 1.0 and (low is None or low <= 1.0):
        ci = f"{_pct(1.0 - high)}-{_pct_open(low)} %"
    elif low is not None and low >= 1.0:
        ci = f"{_pct(low - 1.0)}-{'?' if high is None else _pct(high - 1.0)} % more"
    else:
        more = "?" if high is None else _pct(high - 1.0)
        ci = f"{more} % more to {_pct_open(low)} % fewer"
    return f"{_change(e.estimate)} in the next {minutes} min, 95 % CI {ci}, p {_p_eq(e.p_value)}"


def _change(ratio: float) -> str:
    if ratio < 1.0:
        return f"{_pct(1.0 - ratio)} % fewer peaks"
    if ratio > 1.0:
        return f"{_pct(ratio - 1.0)} % more peaks"
    return "as many peaks"


def _laeq_sentence(e: Effect, minutes: int) -> str:
    est, low, high = e.estimate, e.low, e.high
    if est is None:
        return f"no figure: {e.note}"
    word = "quieter" if est < 0 else "louder"
    if high is not None and high <= 0.0:
        ci = f"{-high:.1f}-{'?' if low is None else f'{-low:.1f}'} dB quieter"
    elif low is not None and low >= 0.0:
        ci = f"{low:.1f}-{'?' if high is None else f'{high:.1f}'} dB louder"
    else:
        up = "?" if high is None else f"{high:.1f}"
        down = "?" if low is None else f"{-low:.1f}"
        ci = f"{up} dB louder to {down} dB quieter"
    return f"{abs(est):.1f} dB {word} in the next {minutes} min, 95 % CI {ci}, p {_p_eq(e.p_value)}"


def _pct(share: float) -> str:
    return f"{100.0 * share:.0f}"


def _pct_open(low_ratio: float | None) -> str:
    return "?" if low_ratio is None else _pct(1.0 - low_ratio)


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}".rstrip("0").rstrip(".")


def _p_eq(p: float | None) -> str:
    if p is None:
        return "= ?"
    text = _p(p)
    return text if text.startswith("<") else f"= {text}"


def _clock(hours: float) -> str:
    minutes = round(hours * 60.0) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _r(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 4)


def site_tz(storage: Storage) -> ZoneInfo:
    """The site's time zone as the gateway stored it; UTC for a database that does not say."""
    try:
        return ZoneInfo(storage.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _iso(epoch_s: float | None, tz: ZoneInfo) -> str | None:
    if epoch_s is None:
        return None
    return dt.datetime.fromtimestamp(epoch_s, tz).isoformat(timespec="seconds")
