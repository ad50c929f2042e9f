"""`hushlight report`: the verdict on the nudges, read from the gateway's database.

`gateway.report` reads the episodes and words the verdict; this command checks
its options, prints the report as sentences, ``--json`` or ``--csv`` (the same
figures, for programs), and ``--plots DIR`` writes them as PNG.  The storage's
errors become `UsageError` here.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import StorageError
from gateway.report import as_dict, read_episodes, site_tz
from gateway.storage import Storage
from gateway.storage.postgres import is_postgres_url
from gateway.verdict import Verdict, verdicts
from tools.errors import UsageError

__all__ = ["HELP", "configure", "run"]

HELP = "the verdict on each nudge kind: its effect against control periods, with intervals"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        required=True,
        help="the gateway's SQLite database, or the postgresql:// URL of the store gateways "
        "share (its storage.url)",
    )
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
    db: str | Path = str(args.db)
    if not is_postgres_url(db):
        db = Path(db)
        if not db.is_file():
            raise UsageError(
                f"--db {db}: no such file; give the storage.path of the gateway's config "
                "(or the storage.url of gateways that share PostgreSQL)"
            )
    try:
        storage = Storage(db, read_only=True)
    except StorageError as exc:
        raise UsageError(str(exc)) from exc
    with storage:
        tz = tz or site_tz(storage)
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
