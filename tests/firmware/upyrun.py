"""Run a firmware snippet in the MicroPython unix port inside a given folder
(the folder plays the device's flash root) and return what it printed as JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tools import upy
from tools.sensor import install_firmware


def mp(code: str, cwd: Path, timeout: float = 60.0, *, compiled: bool = False) -> Any:
    lines = mp_lines(code, cwd, timeout, compiled=compiled)
    # the snippet prints its result last; log lines may come before it
    return json.loads(lines[-1]) if lines else None


def mp_lines(
    code: str,
    cwd: Path,
    timeout: float = 60.0,
    stdin: bytes | None = None,
    *,
    compiled: bool = False,
) -> list[str]:
    """Every line the snippet printed.  `compiled`: run the firmware as the
    device does, from mpy-cross output in `cwd` (the whole application only
    fits the ESP32-sized heap that way)."""
    extra = install_firmware(cwd) if compiled else None
    proc = subprocess.run(
        upy.command("-c", code),
        cwd=cwd,
        env=upy.firmware_env(extra),
        capture_output=True,
        input=stdin,
        timeout=timeout,
        check=False,
    )
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise AssertionError(
            f"MicroPython exited {proc.returncode}:\n{out}\n{proc.stderr.decode(errors='replace')}"
        )
    return out.strip().splitlines()
