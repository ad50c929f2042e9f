"""`hushlight report`: did the nudges help?  Levels after nudges against levels after controls.

For every stored episode (a nudge, or a control: the trigger fired and nothing
was sent) the report looks at the minute levels of the zone's sensors in the
minutes after it (default 10): the minute rows whose start lies in
``[at, at + 10 min)``.  Per episode it takes

- LAeq after: the energy mean over those rows (all sensors, weighted by the
  seconds each row covers);
- peaks after: the number of records with LAFmax >= the peak threshold in
  those rows, per sensor that reported (total / sensors).

Then, per zone and nudge kind, separately for nudges and controls: the count
of episodes, how many had levels after them, the arithmetic mean of the
per-episode LAeq (dB) and of the per-episode peaks, and the difference
nudge - control (negative = quieter after nudges).  Minutes flagged as
calibrating (a test tone) are left out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import StorageError
from gateway.storage import EpisodeRow, Storage
from tools.errors import UsageError

__all__ = ["HELP", "EpisodeEffect", "GroupStats", "compute", "configure", "run"]

HELP = "compare the levels after nudges with the levels after control periods, per zone and kind"


@dataclass(frozen=True)
class EpisodeEffect:
    """The levels after one episode; None when no level was stored for that span."""

    episode: EpisodeRow
    laeq_after: float | None
    peaks_after: float | None


@dataclass(frozen=True)
class GroupStats:
    """Nudges or controls of one zone and kind."""

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


def effect(storage: Storage, episode: EpisodeRow, minutes: int = 10) -> EpisodeEffect:
    """The levels in the `minutes` after `episode`."""
    rows = storage.minute_levels(episode.sensors, episode.at, episode.at + 60.0 * minutes)
    if not rows:
        return EpisodeEffect(episode, None, None)
    energy = sum(r.dur * 10.0 ** (r.laeq / 10.0) for r in rows)
    seconds = sum(r.dur for r in rows)
    sensors = {r.sensor for r in rows}
    peaks = sum(r.peaks for r in rows) / len(sensors)
    return EpisodeEffect(episode, 10.0 * math.log10(energy / seconds), peaks)


def stats(effects: list[EpisodeEffect]) -> GroupStats:
    """Count and means of a group of episodes."""
    laeqs = [e.laeq_after for e in effects if e.laeq_after is not None]
    peaks = [e.peaks_after for e in effects if e.peaks_after is not None]
    return GroupStats(
        count=len(effects),
        with_data=len(laeqs),
        mean_laeq_after=sum(laeqs) / len(laeqs) if laeqs else None,
        mean_peaks_after=sum(peaks) / len(peaks) if peaks else None,
    )


def compute(
    storage: Storage, since: float | None = None, zone: str | None = None, minutes: int = 10
) -> dict[str, Any]:
    """The report as a JSON-ready dict: one row per (zone, kind), nudges vs controls."""
    groups: dict[tuple[str, str], dict[bool, list[EpisodeEffect]]] = {}
    episodes = storage.episodes(since=since, zone=zone)
    for ep in episodes:
        groups.setdefault((ep.zone, ep.kind), {False: [], True: []})[ep.control].append(
            effect(storage, ep, minutes)
        )
    rows = []
    for (zid, kind), by_control in sorted(groups.items()):
        nudges = stats(by_control[False])
        controls = stats(by_control[True])
        rows.append(
            {
                "zone": zid,
                "kind": kind,
                "nudges": nudges.as_dict(),
                "controls": controls.as_dict(),
                "difference": {
                    "laeq_db": _r(_diff(nudges.mean_laeq_after, controls.mean_laeq_after)),
                    "peaks": _r(_diff(nudges.mean_peaks_after, controls.mean_peaks_after)),
                },
            }
        )
    tz = _site_tz(storage)
    first = episodes[0].at if episodes else None
    last = episodes[-1].at if episodes else None
    return {
        "minutes_after": minutes,
        "peak_threshold_db": storage.peak_threshold_db,
        # epoch seconds for programs, ISO 8601 in the site's time zone for people
        "timezone": tz.key,
        "since": since,
        "since_iso": _iso(since, tz),
        "first_episode_at": first,
        "first_episode_at_iso": _iso(first, tz),
        "last_episode_at": last,
        "last_episode_at_iso": _iso(last, tz),
        "zone": zone,
        "rows": rows,
    }


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, type=Path, help="the gateway's SQLite database")
    parser.add_argument(
        "--since",
        help="only episodes from this time on, ISO 8601 (e.g. 2026-11-01 or "
        "2026-11-01T23:00+01:00; without an offset, the site's local time)",
    )
    parser.add_argument("--zone", help="only this zone")
    parser.add_argument(
        "--minutes", type=int, default=10, help="minutes after each episode to look at (default 10)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.minutes <= 240:
        raise UsageError(f"--minutes {args.minutes}: expected a whole number from 1 to 240")
    db: Path = args.db
    if not db.is_file():
        raise UsageError(f"--db {db}: no such file; give the storage.path of the gateway's config")
    try:
        storage = Storage(db, read_only=True)
    except StorageError as exc:
        raise UsageError(str(exc)) from exc
    with storage:
        since = _parse_since(args.since, _site_tz(storage)) if args.since else None
        report = compute(storage, since=since, zone=args.zone, minutes=args.minutes)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    return 0


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    minutes = report["minutes_after"]
    table = Table(title=f"Levels in the {minutes} minutes after nudges and after controls")
    table.add_column("zone", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    for name in ("nudges", "LAeq", "peaks", "controls", "LAeq", "peaks", "Δ LAeq", "Δ peaks"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in report["rows"]:
        n, c, d = row["nudges"], row["controls"], row["difference"]
        table.add_row(
            row["zone"],
            row["kind"],
            _count(n),
            _fmt(n["mean_laeq_after"]),
            _fmt(n["mean_peaks_after"]),
            _count(c),
            _fmt(c["mean_laeq_after"]),
            _fmt(c["mean_peaks_after"]),
            _fmt(d["laeq_db"], signed=True),
            _fmt(d["peaks"], signed=True),
        )
    # piped output would be cut to 80 columns and wrap the figures
    console = Console() if sys.stdout.isatty() else Console(width=120)
    if not report["rows"]:
        console.print(
            "No nudges or controls recorded" + (" since then." if report["since"] else ".")
        )
        return
    console.print(
        f"Episodes from {report['first_episode_at_iso']} to {report['last_episode_at_iso']}"
        + (f", since {report['since_iso']}" if report["since"] is not None else "")
        + f" (times in {report['timezone']})"
    )
    console.print(table)
    console.print(
        "nudges, controls: episodes (with levels stored after them); LAeq: energy mean in dB(A); "
        f"peaks: LAFmax >= {report['peak_threshold_db']:g} dB per sensor; "
        "Δ = nudges - controls, negative = quieter "
        "after nudges"
    )


def _count(g: dict[str, Any]) -> str:
    return f"{g['count']} ({g['with_data']})"


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.1f}" if signed else f"{x:.1f}"


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


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


def _parse_since(text: str, tz: ZoneInfo) -> float:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--since {text!r}: expected an ISO 8601 date or time such as 2026-11-01 or "
            "2026-11-01T23:00+01:00"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    return when.timestamp()
