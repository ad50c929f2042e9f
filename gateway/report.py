"""`hushlight report`: the verdict on the nudges, read from the gateway's database.

The statistics are `gateway.verdict`'s; this module reads, prints and plots.
For every stored episode (a nudge, or a control: the trigger fired and nothing
was sent) it reads the minute levels of the zone's sensors in the minutes
before the trigger (rows whose start lies in ``[at - N min, at)``, so the
trigger's own minute) and after it (``[at, at + N min)``), N = 10 by default;
minutes flagged as calibrating (a test tone) are left out.

Per zone and nudge kind it prints the effect of a nudge against its controls
on the peaks (LAFmax >= the peak threshold, per sensor) as a change in %, and
on LAeq in dB, each with a 95 % interval and a p-value, the counts, the
smallest effect the data could detect, and whether nudges and controls fell
at the same hours and nights; with too little data it says how many more
episodes are needed.  ``--json`` and ``--csv`` give the same figures for
programs, ``--plots DIR`` writes them as PNG.  The JSON also keeps the plain
means after nudges and after controls and their difference (no adjustment,
no interval), for comparison with older reports.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import StorageError
from gateway.storage import EpisodeRow, MinuteRow, Storage
from gateway.verdict import MIN_PER_ARM, Effect, EpisodeLevels, Minute, Verdict, measures, verdicts
from tools.errors import UsageError

__all__ = ["HELP", "GroupStats", "compute", "configure", "describe", "read_episodes", "run"]

HELP = "the verdict on each nudge kind: its effect against control periods, with intervals"


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
    zone_info = ZoneInfo(tz) if tz is not None else _site_tz(storage)
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


# ---------------------------------------------------------------- command line


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, type=Path, help="the gateway's SQLite database")
    parser.add_argument(
        "--since",
        help="only episodes from this time on, ISO 8601 (e.g. 2026-11-01 or "
        "2026-11-01T23:00+01:00; without an offset, the site's local time)",
    )
    parser.add_argument("--until", help="only episodes before this time, ISO 8601 like --since")
    parser.add_argument("--zone", help="only this zone")
    parser.add_argument(
        "--minutes",
        type=int,
        default=10,
        help="minutes after each trigger to look at, and before it to adjust for (default 10)",
    )
    parser.add_argument(
        "--timezone",
        help="the site's time zone, for times, hours and nights (default: the one the gateway "
        "stored in the database, else UTC)",
    )
    parser.add_argument(
        "--target-peaks",
        type=float,
        default=20.0,
        metavar="PCT",
        help="the reduction of peaks worth detecting, in %% (default 20): the report says "
        "how many more episodes it takes",
    )
    parser.add_argument(
        "--target-db",
        type=float,
        default=1.0,
        metavar="DB",
        help="the reduction of LAeq worth detecting, in dB (default 1)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the label permutations (default 0)"
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON instead of sentences")
    out.add_argument(
        "--csv", action="store_true", help="print CSV, one row per zone, kind, measure"
    )
    parser.add_argument(
        "--plots", type=Path, metavar="DIR", help="also write the plots as PNG files into DIR"
    )


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.minutes <= 240:
        raise UsageError(f"--minutes {args.minutes}: expected a whole number from 1 to 240")
    if not 0.0 < args.target_peaks < 100.0:
        raise UsageError(f"--target-peaks {args.target_peaks:g}: expected a % between 0 and 100")
    if not 0.0 < args.target_db <= 20.0:
        raise UsageError(f"--target-db {args.target_db:g}: expected dB above 0, at most 20")
    tz = None
    if args.timezone is not None:
        try:
            tz = ZoneInfo(args.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise UsageError(
                f"--timezone {args.timezone!r}: not an IANA time zone; give one such as "
                "Europe/Brussels (the site.timezone of the gateway's config)"
            ) from None
    db: Path = args.db
    if not db.is_file():
        raise UsageError(f"--db {db}: no such file; give the storage.path of the gateway's config")
    try:
        storage = Storage(db, read_only=True)
    except StorageError as exc:
        raise UsageError(str(exc)) from exc
    with storage:
        tz = tz or _site_tz(storage)
        since = _parse_time("--since", args.since, tz) if args.since else None
        until = _parse_time("--until", args.until, tz) if args.until else None
        if since is not None and until is not None and until <= since:
            raise UsageError(f"--until {args.until} is not after --since {args.since}; swap them")
        episodes = read_episodes(storage, since, args.zone, args.minutes, until)
        threshold = storage.peak_threshold_db
    found = verdicts(
        episodes,
        tz=tz.key,
        target_peaks=args.target_peaks / 100.0,
        target_db=args.target_db,
        seed=args.seed,
    )
    report = as_dict(episodes, found, threshold, args.minutes, since, until, args.zone, tz)
    written = _plots(args.plots, found, report) if args.plots else []
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.csv:
        _print_csv(found)
    else:
        _print_text(report)
    for path in written:
        print(f"wrote {path}", file=sys.stderr if args.json or args.csv else sys.stdout)
    return 0


def _print_text(report: dict[str, Any]) -> None:
    minutes = report["minutes_after"]
    if not report["rows"]:
        limited = report["since"] is not None or report["until"] is not None
        print("No nudges or controls recorded" + (" in that period." if limited else "."))
        return
    print(
        f"Episodes from {report['first_episode_at_iso']} to {report['last_episode_at_iso']}"
        + (f", since {report['since_iso']}" if report["since"] is not None else "")
        + (f", before {report['until_iso']}" if report["until"] is not None else "")
        + f" (times in {report['timezone']})"
    )
    print(
        f"Nudges against their controls: the {minutes} min after each trigger, adjusted "
        f"for the {report['minutes_before']} min before it; peaks are LAFmax >= "
        f"{report['peak_threshold_db']:g} dB(A) per sensor."
    )
    for row in report["rows"]:
        print()
        print("\n".join(row["text"]))


_CSV_COLUMNS = (
    *("zone", "kind", "measure", "nudges", "controls", "nudges_analysed", "controls_analysed"),
    *("nights", "estimate", "ci_low", "ci_high", "p_value", "mean_nudges", "mean_controls"),
    *("mde", "target", "more_needed", "balance_ok", "note"),
)


def _print_csv(found: list[Verdict]) -> None:
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(_CSV_COLUMNS)
    for v in found:
        common = [
            v.zone,
            v.kind,
            "",
            v.nudges,
            v.controls,
            v.nudges_analysed,
            v.controls_analysed,
            v.nights,
        ]
        balance = "" if v.balance is None else int(v.balance.ok)
        if v.peaks is None or v.laeq is None:
            out.writerow([*common, *[""] * 8, v.more_needed, balance, "not enough data yet"])
            continue
        for e in (v.peaks, v.laeq):
            common[2] = e.measure
            figures = (
                e.estimate,
                e.low,
                e.high,
                e.p_value,
                e.mean_nudges,
                e.mean_controls,
                e.mde,
                e.target,
            )
            out.writerow(
                [
                    *common,
                    *("" if x is None else f"{x:.6g}" for x in figures),
                    e.more_needed,
                    balance,
                    e.note,
                ]
            )


def _plots(folder: Path, found: list[Verdict], report: dict[str, Any]) -> list[Path]:
    """One PNG of the effects with their intervals, one per zone and kind of the episodes."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    from matplotlib import pyplot as plt

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"--plots {folder}: cannot create the folder ({exc.strerror}); give a writable one"
        ) from None
    minutes = report["minutes_after"]
    written = []
    names = [f"{v.zone} {v.kind}" for v in found]
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(10, 1.2 + 0.6 * max(1, len(found))), sharey=True
    )
    for i, v in enumerate(found):
        for ax, e in ((left, v.peaks), (right, v.laeq)):
            if e is None or e.estimate is None:
                # x in axes fraction: with no figure at all the data limits mean nothing
                ax.text(
                    0.5,
                    i,
                    "not enough data yet",
                    va="center",
                    ha="center",
                    fontsize=8,
                    transform=ax.get_yaxis_transform(),
                )
                continue
            # peaks as % change, so both panels read "left of 0 = quieter"
            pct = e.measure == "peaks"
            lo = None if e.low is None else _axis_value(e.low, pct)
            hi = None if e.high is None else _axis_value(e.high, pct)
            est = _axis_value(e.estimate, pct)
            ax.errorbar(
                est,
                i,
                xerr=[[est - lo if lo is not None else 0.0], [hi - est if hi is not None else 0.0]],
                fmt="o",
                color="black",
                capsize=4,
            )
    for ax, label in (
        (left, f"change of peaks in the next {minutes} min, % (95 % CI)"),
        (right, f"change of LAeq in the next {minutes} min, dB (95 % CI)"),
    ):
        ax.axvline(0.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(label)
    left.set_yticks(range(len(found)), names)
    left.set_ylim(len(found) - 0.3, -0.7)  # the first zone on top, as in the text
    fig.suptitle("Nudges against controls (left of the dashed line: quieter after nudges)")
    fig.tight_layout()
    path = folder / "effects.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    for v, row in zip(found, report["rows"], strict=True):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        for ax, before, after, what in (
            (axes[0], "peaks_before", "peaks_after", "peaks per sensor"),
            (axes[1], "laeq_before", "laeq_after", "LAeq, dB(A)"),
        ):
            for control, style in (
                (False, {"marker": "o", "color": "tab:blue", "label": "nudge"}),
                (True, {"facecolors": "none", "edgecolors": "tab:orange", "label": "control"}),
            ):
                pts = [p for p in v.points if p.control == control]
                ax.scatter(
                    [getattr(p, before) for p in pts], [getattr(p, after) for p in pts], **style
                )
            ax.set_xlabel(f"{what}, {minutes} min before the trigger")
            ax.set_ylabel(f"{what}, {minutes} min after")
            ax.legend(loc="upper left", fontsize=8)
        fig.suptitle("\n".join(line.strip() for line in row["text"][:3]), fontsize=8)
        fig.tight_layout()
        path = folder / f"verdict-{_file_part(v.zone)}-{_file_part(v.kind)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _axis_value(x: float, ratio_as_pct: bool) -> float:
    return 100.0 * (x - 1.0) if ratio_as_pct else x


def _file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "_", name)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _r(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 4)


def _site_tz(storage: Storage) -> ZoneInfo:
    """The site's time zone as the gateway stored it; UTC for a database that does not say."""
    try:
        return ZoneInfo(storage.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _iso(epoch_s: float | None, tz: ZoneInfo) -> str | None:
    if epoch_s is None:
        return None
    return dt.datetime.fromtimestamp(epoch_s, tz).isoformat(timespec="seconds")


def _parse_time(option: str, text: str, tz: ZoneInfo) -> float:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{option} {text!r}: expected an ISO 8601 date or time such as 2026-11-01 or "
            "2026-11-01T23:00+01:00"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    return when.timestamp()
