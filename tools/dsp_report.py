"""`hushlight dsp-report`: the firmware's weighting response against IEC 61672-1 limits.

For one sample rate and weighting it takes, at each nominal 1/3-octave
frequency, the response of the filter as the firmware computes it (fixed
point included) from `dsp.conformance`, and shows its error against the
IEC 61672-1:2013 design goal next to the class 1 and class 2 acceptance
limits (Table 3): a table in the terminal and a PNG plot. The exit status is
0 when every frequency of the tested range is within class 1, 1 otherwise.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from rich import box
from rich.console import Console
from rich.table import Table

from dsp import conformance
from dsp.weighting import MIC_LF_CORNER_HZ, RATES
from tools.errors import UsageError

HELP = "plot and tabulate the firmware weighting's error against IEC 61672-1 class 1 and 2 limits"

WEIGHTINGS: Final = ("A", "C")


@dataclass(frozen=True)
class Band:
    """One nominal 1/3-octave frequency of the report."""

    nominal_hz: float
    exact_hz: float
    goal_db: float  # IEC 61672-1 design goal (nominal weighting)
    firmware_db: float  # response of the firmware filter
    class1: tuple[float, float]  # acceptance limits on the error (lower, upper); -inf = none
    class2: tuple[float, float]
    tested: bool  # inside the range this rate is held to

    @property
    def error_db(self) -> float:
        return self.firmware_db - self.goal_db

    def within(self, limits: tuple[float, float]) -> bool:
        low, high = limits
        return low <= self.error_db <= high


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rate",
        type=int,
        default=48000,
        help="sample rate in Hz: 48000 (default), 44100, 32000 or 16000",
    )
    parser.add_argument(
        "--weighting",
        type=str.upper,
        choices=WEIGHTINGS,
        default="A",
        help="frequency weighting (default A)",
    )
    parser.add_argument(
        "--mic",
        choices=sorted(MIC_LF_CORNER_HZ),
        default=None,
        help="include this microphone's modelled response and its equaliser (default: none)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("response.png"),
        metavar="FILE.png",
        help="where to write the plot (default response.png)",
    )


def bands(rate: int, weighting: str, mic: str | None = None) -> list[Band]:
    """The report's rows, from the conformance check of `dsp.conformance`."""
    return [
        Band(
            nominal_hz=r.nominal_hz,
            exact_hz=r.exact_hz,
            goal_db=r.goal_db,
            firmware_db=r.firmware_db,
            class1=(r.class1_minus, r.class1_plus),
            class2=(r.class2_minus, r.class2_plus),
            tested=r.tested,
        )
        for r in conformance.check(rate, weighting, mic)
    ]


def _limit(value: float) -> str:
    return "none" if math.isinf(value) else f"{value:+.1f}"


def _db(value: float, fmt: str) -> str:
    # a band above Nyquist has no response at all
    return format(value, fmt) if math.isfinite(value) else "-"


def _freq(hz: float) -> str:
    return f"{hz / 1000:g}k" if hz >= 1000 else f"{hz:g}"


def table(rate: int, weighting: str, rows: Sequence[Band]) -> Table:
    t = Table(
        title=f"{weighting}-weighting at {rate} Hz, firmware vs IEC 61672-1 (dB)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for name in ("Hz", "goal", "firmware", "error", "class 1", "class 2", "verdict"):
        t.add_column(name, justify="left" if name == "verdict" else "right", no_wrap=True)
    for b in rows:
        if not b.tested:
            verdict = "[dim]untested[/dim]"
        elif b.within(b.class1):
            verdict = "[green]OK[/green]"
        elif b.within(b.class2):
            verdict = "[yellow]class 2[/yellow]"
        else:
            verdict = "[red]FAIL[/red]"
        t.add_row(
            _freq(b.nominal_hz),
            f"{b.goal_db:.2f}",
            _db(b.firmware_db, ".2f"),
            _db(b.error_db, "+.2f"),
            f"{_limit(b.class1[0])}/{_limit(b.class1[1])}",
            f"{_limit(b.class2[0])}/{_limit(b.class2[1])}",
            verdict,
        )
    return t


def plot(rate: int, weighting: str, rows: Sequence[Band], out: Path) -> None:
    """Two panels on one frequency axis: the error inside the class 1 and 2
    limits (the verdict), and the same error zoomed in (how close it is)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a build server or a technician's SSH
    from matplotlib import pyplot as plt

    freqs = [b.nominal_hz for b in rows]
    tested = [b for b in rows if b.tested and math.isfinite(b.error_db)]
    untested = [b for b in rows if not b.tested and math.isfinite(b.error_db)]
    bad = [b for b in tested if not b.within(b.class1)]
    # +-6 dB shows every limit that exists; widen (to 20 dB at most) so that a
    # failing tested band stays on the chart. "No limit" is drawn off the chart.
    errors = [b.error_db for b in tested] or [0.0]
    floor = max(-20.0, min(-6.0, math.floor(min(errors)) - 1.0))
    ceil = min(20.0, max(6.0, math.ceil(max(errors)) + 1.0))

    def clip(v: float) -> float:
        return min(max(v, floor - 1.0), ceil + 1.0)

    fig, (top, zoom) = plt.subplots(
        2, 1, figsize=(10, 7.5), sharex=True, height_ratios=(2, 1), layout="constrained"
    )
    for cls, colour, alpha in (("class 2", "tab:orange", 0.15), ("class 1", "tab:green", 0.25)):
        lims = [b.class1 if cls == "class 1" else b.class2 for b in rows]
        top.fill_between(
            freqs,
            [clip(lo) for lo, _ in lims],
            [clip(hi) for _, hi in lims],
            step="mid",
            color=colour,
            alpha=alpha,
            label=f"{cls} limits",
            linewidth=0,
        )
    series = [
        (tested, "o-", "tab:blue", 6, "firmware error"),
        (untested, "x", "tab:gray", 6, "outside the tested range"),
        (bad, "o", "tab:red", 9, "outside class 1"),
    ]
    for ax, limit in ((top, clip), (zoom, None)):
        for subset, style, colour, size, label in series:
            if subset:
                ys = [b.error_db if limit is None else limit(b.error_db) for b in subset]
                ax.plot(
                    [b.nominal_hz for b in subset],
                    ys,
                    style,
                    color=colour,
                    markersize=size,
                    label=label,
                )
        ax.axhline(0.0, color="black", linewidth=0.8)
        if rate / 2 < freqs[-1]:
            ax.axvline(rate / 2, color="tab:gray", linestyle="--", linewidth=1)
        ax.grid(True, which="major", alpha=0.3)
    top.set_ylim(floor, ceil)
    top.set_ylabel("error vs IEC 61672-1 goal (dB)")
    top.set_title(f"{weighting}-weighting as the firmware computes it, {rate} Hz")
    top.legend(loc="lower left")
    if rate / 2 < freqs[-1]:
        top.annotate(
            " Nyquist", (rate / 2, ceil), va="top", ha="left", color="tab:gray", fontsize=9
        )
    # the zoom shows the tested bands at the scale of their own error
    span = max([abs(b.error_db) for b in tested] + [0.05]) * 1.3
    zoom.set_ylim(-span, span)
    zoom.set_ylabel("error, zoomed (dB)")
    zoom.set_xscale("log")
    zoom.set_xticks(freqs[::3], [_freq(f) for f in freqs[::3]])
    zoom.minorticks_off()
    zoom.set_xlim(freqs[0] / 1.15, freqs[-1] * 1.15)
    zoom.set_xlabel("frequency (Hz, nominal 1/3-octave)")
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    if args.rate not in RATES:
        raise UsageError(
            f"--rate {args.rate} Hz is not supported by the firmware; "
            f"give one of {', '.join(str(r) for r in RATES)}"
        )
    out: Path = args.out
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out} is not a .png file; give a path ending in .png")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist; create it first")
    rows = bands(args.rate, args.weighting, args.mic)
    title = args.weighting if args.mic is None else f"{args.weighting} ({args.mic} + equaliser)"
    console = Console()
    console.print(table(args.rate, title, rows))
    try:
        plot(args.rate, title, rows, out)
    except OSError as exc:
        raise UsageError(
            f"--out {out} cannot be written ({exc.strerror}); choose another path"
        ) from None
    failed = [b for b in rows if b.tested and not b.within(b.class1)]
    tested = [b for b in rows if b.tested]
    span = f"{_freq(tested[0].nominal_hz)}-{_freq(tested[-1].nominal_hz)} Hz" if tested else "none"
    if failed:
        names = ", ".join(_freq(b.nominal_hz) for b in failed)
        console.print(f"[red]outside class 1 at {names} Hz[/red] (tested {span}); plot in {out}")
        return 1
    console.print(f"[green]all within class 1[/green] over {span}; plot in {out}")
    return 0
