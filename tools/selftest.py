"""`hushlight selftest`: run the sensor's self-test over its console and show a pass/fail table.

The firmware checks, one reply line each: the microphone delivers a signal,
nothing clips, the DSP load is within budget, the broker is reachable and
the clock is synchronised.  Exit status 0 only when every check passes (and
the sensor said so too), so a script or `hushlight flash` can rely on it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import IO

from tools.console import Console
from tools.errors import ToolError, UsageError

HELP = "run the sensor's self-test over its console and print a pass/fail table"

# What to do when a check fails: the firmware's detail says what is wrong,
# this says what a technician on a ladder can try.
ADVICE = {
    "mic": "check the INMP441 wiring (SD, SCK, WS, 3V3, GND, L/R to GND); is the port covered?",
    "clipping": "the sound is too loud for the microphone, or the sensitivity setting is wrong",
    "dsp_load": "lower sample_rate (set sample_rate 32000) or remove other work from the board",
    "broker": "check Wi-Fi (status: rssi), the broker URL, the sensor's MQTT password and the CA",
    "time": "the sensor needs NTP (UDP 123) to reach ntp_host; check the network's firewall",
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_port(port: str) -> str:
    """`port` if it exists; a UsageError that says where to find the right one otherwise."""
    if not os.path.exists(port):
        raise UsageError(
            f"the port {port} does not exist; a board shows up as /dev/ttyUSB* or /dev/ttyACM*, "
            "a virtual sensor prints its port as 'console: /dev/pts/N'"
        )
    return port


def run_checks(port: str, timeout: float = 15.0) -> list[Check]:
    """The sensor's self-test results; ToolError when the console does not answer properly."""
    with Console(port, timeout=timeout) as console:
        replies = console.command("selftest")
    final = replies[-1]
    checks = [
        Check(str(r["check"]), bool(r.get("ok")), str(r.get("detail", "")))
        for r in replies
        if "check" in r
    ]
    if not final.get("done"):
        raise ToolError(f"the sensor on {port} refused the self-test: {final.get('error', final)}")
    if not checks:
        raise ToolError(f"the sensor on {port} ran no self-test checks; update its firmware")
    if bool(final.get("ok")) != all(c.ok for c in checks):
        # Trust neither side alone: report the disagreement as a failed check.
        checks.append(
            Check("summary", False, "the sensor's overall result disagrees with its checks")
        )
    return checks


def render(checks: list[Check], port: str, stream: IO[str] | None = None) -> None:
    from rich.console import Console as Screen
    from rich.table import Table

    table = Table(title=f"self-test of the sensor on {port}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for c in checks:
        result = "[green]PASS[/green]" if c.ok else "[bold red]FAIL[/bold red]"
        detail = (
            c.detail
            if c.ok
            else f"{c.detail}\n[dim]try: {ADVICE.get(c.name, 'see the README')}[/dim]"
        )
        table.add_row(c.name, result, detail)
    Screen(file=stream or sys.stdout, soft_wrap=False).print(table)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", required=True, help="console port: /dev/ttyUSB0, or a virtual sensor's /dev/pts/N"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=15.0,
        metavar="S",
        help="seconds to wait for each reply line (default 15)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="repeat the self-test for up to S seconds until it passes (e.g. right after boot)",
    )


def run(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g} is not positive; give seconds > 0")
    if args.wait < 0:
        raise UsageError(f"--wait {args.wait:g} is negative; give seconds >= 0")
    check_port(args.port)
    deadline = time.monotonic() + args.wait
    while True:
        try:
            checks = run_checks(args.port, args.timeout)
        except ToolError as exc:
            if time.monotonic() < deadline:
                time.sleep(1.0)
                continue
            print(f"hushlight selftest: {exc}", file=sys.stderr)
            return 1
        if all(c.ok for c in checks) or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    render(checks, args.port)
    passed = all(c.ok for c in checks)
    print(
        "all checks passed"
        if passed
        else f"{sum(not c.ok for c in checks)} of {len(checks)} checks failed"
    )
    return 0 if passed else 1
