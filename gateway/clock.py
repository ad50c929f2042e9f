"""Clocks of the gateway and the lights simulator.

Everything the service decides is in site time (UTC epoch seconds, what the
sensors stamp their records with).  The real clock is the wall clock.  The
scaled clock runs a demo night in minutes: site time advances `scale` times
faster than the machine's monotonic clock from a chosen `origin`, so a
10-minute hold ends after 10 s at `--time-scale 60`.  Sleeps are in site
seconds and shortened by the same factor.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
from typing import Protocol

__all__ = [
    "Clock",
    "RealClock",
    "ScaledClock",
    "add_clock_arguments",
    "clock_from_args",
    "iso_time",
]


def iso_time(epoch_s: float, tz: dt.tzinfo | None = None) -> str:
    """UTC epoch seconds as ISO 8601 to the second, in `tz` (the site's time zone) with its
    offset; without `tz`, in this machine's time zone.  What people read; machines keep
    the epoch seconds."""
    when = dt.datetime.fromtimestamp(epoch_s, dt.UTC)
    return (when.astimezone(tz) if tz is not None else when.astimezone()).isoformat(
        timespec="seconds"
    )


class Clock(Protocol):
    def now(self) -> float:
        """Site time, UTC epoch seconds."""

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of site time."""

    def wall(self, seconds: float) -> float:
        """How many real seconds `seconds` of site time last."""


class RealClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def wall(self, seconds: float) -> float:
        return seconds


class ScaledClock:
    """`origin + (monotonic - m0) * scale`.

    Built on the monotonic clock so that a wall-clock step (NTP) does not make
    the demo jump.  `m0` is the monotonic reading at which site time was
    `origin`; processes given the same origin, scale and real start time
    (``--time-start``) share one timeline exactly, across restarts too.
    """

    def __init__(self, origin: float, scale: float, m0: float | None = None) -> None:
        if not scale > 0:
            raise ValueError(f"time scale must be a positive number, got {scale!r}")
        self.origin = float(origin)
        self.scale = float(scale)
        self.m0 = time.monotonic() if m0 is None else m0

    def now(self) -> float:
        return self.origin + (time.monotonic() - self.m0) * self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)

    def wall(self, seconds: float) -> float:
        return seconds / self.scale


def add_clock_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--time-scale",
        type=float,
        default=None,
        metavar="S",
        help="run site time S times faster than real time (demo); default: real time",
    )
    parser.add_argument(
        "--time-origin",
        type=float,
        default=None,
        metavar="EPOCH",
        help="site time at start-up with --time-scale, UTC epoch seconds; default: now",
    )
    parser.add_argument(
        "--time-start",
        type=float,
        default=None,
        metavar="EPOCH",
        help="real time (UTC epoch s) at which site time was --time-origin; default: start-up. "
        "Give every process of a demo the same three values and their clocks agree exactly",
    )


def clock_from_args(args: argparse.Namespace) -> Clock:
    """The clock the command line asked for; `ValueError` names a bad value."""
    scale = args.time_scale
    origin = args.time_origin
    start = getattr(args, "time_start", None)
    if scale is None:
        if origin is not None or start is not None:
            raise ValueError("--time-origin and --time-start need --time-scale; add --time-scale S")
        return RealClock()
    if not scale > 0 or scale != scale or scale == float("inf"):
        raise ValueError(f"--time-scale must be a positive finite number, got {scale}")
    for name, value in (("--time-origin", origin), ("--time-start", start)):
        if value is not None and not abs(value) < float("inf"):
            raise ValueError(f"{name} must be a number of UTC epoch seconds, got {value}")
    wall = time.time()
    m0 = time.monotonic() - (0.0 if start is None else wall - start)
    return ScaledClock(wall if origin is None else origin, scale, m0)
