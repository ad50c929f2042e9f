"""`hushlight monitor`: watch a sensor live over its console until Ctrl-C.

Shows the interval levels as they are measured (LAeq, LAFmax, LCeq and
flags), the sensor's status, and warnings a technician should act on:
clipping, a DSP load over its budget, the broker unreachable, records
piling up or dropped, and a clock that is not synchronised.

The console streams `levels` until it receives a line, and `status` is a
command of its own, so the monitor alternates: a status, then a few seconds
of levels, then a status again.  When stdout is not a terminal it prints
plain lines instead of the live view.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from typing import Any

from tools.console import Console
from tools.errors import ToolError, UsageError
from tools.selftest import check_port

HELP = "show a sensor's live levels, status and warnings (Ctrl-C to stop)"

# DESIGN.md: the DSP may take at most a quarter of one ESP32 core.
DSP_BUDGET = 0.25
STATUS_EVERY_S = 3.0
HISTORY = 12


def warnings(status: dict[str, Any] | None, record: dict[str, Any] | None) -> list[str]:
    """What needs a technician's attention, as sentences, from the latest status and record."""
    out: list[str] = []
    flags = record.get("flags", []) if record else []
    if "clipped" in flags or "overload" in flags:
        out.append("clipping: the sound is louder than the microphone can measure")
    if status is not None:
        load = status.get("dsp_load")
        if isinstance(load, (int, float)) and load > DSP_BUDGET:
            out.append(f"high DSP load: {load:.0%} of real time (budget {DSP_BUDGET:.0%})")
        if status.get("broker_connected") is False:
            out.append(
                f"broker down: records wait in the sensor ({status.get('buffered', '?')} buffered)"
            )
        if status.get("time_synced") is False or "unsynced_time" in flags:
            out.append("unsynced time: the clock has not been set by NTP; records are flagged")
        dropped = status.get("dropped")
        if isinstance(dropped, int) and dropped > 0:
            out.append(f"{dropped} records dropped: the backlog overflowed during a long outage")
    elif "unsynced_time" in flags:
        out.append("unsynced time: the clock has not been set by NTP; records are flagged")
    return out


def _clock(ms: Any) -> str:
    if not isinstance(ms, (int, float)):
        return "?"
    return time.strftime("%H:%M:%S", time.gmtime(ms / 1000))


def record_line(record: dict[str, Any]) -> str:
    flags = ",".join(record.get("flags", [])) or "-"
    return (
        f"{_clock(record.get('t1'))}Z  LAeq {record.get('laeq', 0):6.2f}  "
        f"LAFmax {record.get('lafmax', 0):6.2f}  LCeq {record.get('lceq', 0):6.2f}  flags {flags}"
    )


def status_line(status: dict[str, Any]) -> str:
    keys = ("state", "fw", "uptime_s", "rssi", "free_mem", "dsp_load", "buffered", "dropped")
    shown = " ".join(f"{k}={status.get(k)}" for k in keys)
    return f"status {status.get('id', '?')}@{status.get('site', '?')}: {shown}"


class View:
    """The live screen: status header, the last records, warnings."""

    def __init__(self, port: str) -> None:
        self.port = port
        self.status: dict[str, Any] | None = None
        self.records: deque[dict[str, Any]] = deque(maxlen=HISTORY)

    def render(self) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        s = self.status or {}
        head = Text(
            f"{s.get('id', '?')} @ {s.get('site', '?')}  fw {s.get('fw', '?')}  "
            f"state {s.get('state', '?')}  up {s.get('uptime_s', '?')} s  "
            f"rssi {s.get('rssi', '?')}  "
            f"free {s.get('free_mem', '?')} B  dsp {s.get('dsp_load', '?')}  "
            f"buffered {s.get('buffered', '?')}  offset {s.get('calibration_offset_db', '?')} dB"
        )
        table = Table(expand=True)
        for column in ("time (UTC)", "LAeq", "LAFmax", "LCeq", "", "flags"):
            table.add_column(column)
        for r in self.records:
            laeq = float(r.get("laeq", 0))
            bar = "#" * max(0, min(40, int((laeq - 30) / 2)))
            table.add_row(
                _clock(r.get("t1")),
                f"{laeq:.2f}",
                f"{float(r.get('lafmax', 0)):.2f}",
                f"{float(r.get('lceq', 0)):.2f}",
                f"[cyan]{bar}[/cyan]",
                ",".join(r.get("flags", [])),
            )
        found = warnings(self.status, self.records[-1] if self.records else None)
        notes = Text(
            "\n".join(f"! {w}" for w in found) or "no warnings",
            style="bold red" if found else "green",
        )
        return Panel(
            Group(head, table, notes), title=f"hushlight monitor {self.port} (Ctrl-C to stop)"
        )


def watch(port: str, duration: float | None, live: bool) -> int:
    view = View(port)
    end = None if duration is None else time.monotonic() + duration
    with Console(port, timeout=5.0) as console:
        if live:
            from rich.live import Live

            with Live(view.render(), refresh_per_second=4, transient=False) as screen:
                _loop(console, view, end, lambda: screen.update(view.render()), live=True)
        else:
            _loop(console, view, end, lambda: None, live=False)
    return 0


def _loop(console: Console, view: View, end: float | None, redraw: Any, *, live: bool) -> None:
    shown: list[str] = []
    while end is None or time.monotonic() < end:
        [view.status] = console.command("status")
        if not live:
            print(status_line(view.status), flush=True)
        redraw()
        span = (
            STATUS_EVERY_S if end is None else max(0.5, min(STATUS_EVERY_S, end - time.monotonic()))
        )
        for record in console.stream("levels", seconds=span):
            view.records.append(record)
            if not live:
                print(record_line(record), flush=True)
            redraw()
        if not live:
            found = warnings(view.status, view.records[-1] if view.records else None)
            for w in found:
                if w not in shown:
                    print(f"warning: {w}", flush=True)
            shown = found


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", required=True, help="console port: /dev/ttyUSB0, or a virtual sensor's /dev/pts/N"
    )
    parser.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C)"
    )
    parser.add_argument("--plain", action="store_true", help="plain lines even on a terminal")


def run(args: argparse.Namespace) -> int:
    check_port(args.port)
    if args.duration is not None and args.duration <= 0:
        raise UsageError(f"--duration {args.duration:g} is not positive; give seconds > 0")
    live = sys.stdout.isatty() and not args.plain
    try:
        return watch(args.port, args.duration, live)
    except KeyboardInterrupt:
        return 0
    except ToolError as exc:
        print(f"hushlight monitor: {exc}", file=sys.stderr)
        return 1
