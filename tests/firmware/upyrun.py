"""Run a firmware snippet in the MicroPython unix port inside a given folder
(the folder plays the device's flash root) and return what it printed as JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tools import upy


def mp(code: str, cwd: Path, timeout: float = 60.0) -> Any:
    lines = mp_lines(code, cwd, timeout)
    # the snippet prints its result last; log lines may come before it
    return json.loads(lines[-1]) if lines else None


def mp_lines(code: str, cwd: Path, timeout: float = 60.0, stdin: bytes | None = None) -> list[str]:
    """Every line the snippet printed."""
    proc = subprocess.run(
        upy.command("-c", code),
        cwd=cwd,
        env=upy.firmware_env(),
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
