"""A virtual sensor with its technician console open, for the tests of the console tools."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.tools.virtual import SITE, Sensor
from tools.console import Console


@contextlib.contextmanager
def console_sensor(
    tmp: Path, broker_url: str, *audio: str, sensor: str = "ns-01"
) -> Iterator[tuple[Sensor, str]]:
    """`hushlight sensor --console AUDIO...` at 16 kHz; yields it and its console port once
    it has greeted and measured its first interval (so `selftest` has levels to judge)."""
    state = tmp / f"state-{sensor}"
    args = ["--id", sensor, "--site", SITE, "--broker", broker_url, "--state-dir", str(state)]
    process = Sensor(tmp, *args, "--rate", "16000", "--console", *audio)
    try:
        port = process.console_path()
        with Console(port, timeout=20.0) as console:
            # the first interval record proves the meter runs
            next(iter(console.stream("levels", count=1)))
        yield process, port
    finally:
        process.kill()
