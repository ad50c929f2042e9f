"""Build the ESP32 stand-in: MicroPython's unix port, 32-bit, single-precision floats.

The x86-64 MicroPython from PyPI has 64-bit words, 63-bit small ints and
double-precision floats; the ESP32 has 32-bit words (a viper ``int`` wraps at
32 bits, small ints hold 31 bits), single-precision floats and a small heap.
The firmware's tests and tools therefore run on MicroPython v1.28.0's unix
port built the ESP32's way: ``MICROPY_FORCE_32BIT=1``,
``MICROPY_FLOAT_IMPL_FLOAT``, with `asyncio` and the networking bundle
(`ssl`/`tls` on mbedtls, `ntptime`, `requests`, ...) frozen in as on the
ESP32 image.

Source, in this order:

1. ``$HUSHLIGHT_MICROPYTHON_SRC`` (a path to a source tarball), if set;
2. ``shared/micropython/micropython-1.28.0-src.tar.gz`` beside the checkout,
   checked against its sha256;
3. the official v1.28.0 release tarball (with its submodules), downloaded.

The result (``micropython`` and the matching ``mpy-cross``) lands in
``build/micropython32/`` with a stamp holding the build key: the sha256 of
the source and the build options.  A second run with the same key does
nothing, so `make test` and `make demo` may call this every time.

``python -m tools.upy_build`` builds (``--force`` to build again,
``--print-path`` to print the interpreter's path).  Exit status 0 on
success; on failure one message says which step failed and what to do.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from tools.errors import ToolError

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
VERSION: Final = "1.28.0"
TOP: Final = f"micropython-{VERSION}"
SHARED_TARBALL: Final = REPO_ROOT.parent / "shared" / "micropython" / f"{TOP}-src.tar.gz"
SHARED_SHA256: Final = "cf68a6b8dfab14d73cedbce7d34916a86f67fe526c42fa7aaf8f4f5e578a9739"
RELEASE_URL: Final = f"https://micropython.org/resources/source/{TOP}.tar.xz"
OUT_DIR: Final = REPO_ROOT / "build" / "micropython32"
INTERPRETER: Final = OUT_DIR / "micropython"
MPY_CROSS: Final = OUT_DIR / "mpy-cross"
STAMP: Final = OUT_DIR / "build.json"

# What the ESP32 image freezes in (ports/esp32/boards/manifest.py): asyncio and
# the networking bundle.  The unix port's own manifest adds nothing we rely on.
MANIFEST: Final = 'include("$(MPY_DIR)/extmod/asyncio")\nrequire("bundle-networking")\n'
MAKE_OPTIONS: Final = (
    "VARIANT=standard",
    "MICROPY_FORCE_32BIT=1",
    "MICROPY_PY_FFI=0",  # libffi is not in the source tarball, and the ESP32 has no ffi
    "MICROPY_PY_BTREE=0",  # nor berkeley-db
    "CFLAGS_EXTRA=-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT",
)
# Bump when the steps below change in a way the options do not show.
RECIPE: Final = 1


class BuildError(ToolError):
    """A step of the build failed; the message names the step and what to do."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _say(msg: str) -> None:
    print(f"micropython32: {msg}", file=sys.stderr, flush=True)


def _download(dest: Path) -> Path:
    target = dest / f"{TOP}.tar.xz"
    _say(f"downloading the v{VERSION} release from {RELEASE_URL}")
    try:
        with urllib.request.urlopen(RELEASE_URL, timeout=60) as resp, target.open("wb") as out:
            shutil.copyfileobj(resp, out)
    except OSError as exc:
        raise BuildError(
            f"step 'download source' failed: {RELEASE_URL}: {exc}. Download it by hand and "
            "set HUSHLIGHT_MICROPYTHON_SRC=/path/to/the/tarball"
        ) from None
    return target


def find_source(scratch: Path) -> tuple[Path, str]:
    """The source tarball to build from and its sha256 (BuildError if unusable)."""
    given = os.environ.get("HUSHLIGHT_MICROPYTHON_SRC")
    if given:
        path = Path(given)
        if not path.is_file():
            raise BuildError(
                f"step 'find source' failed: HUSHLIGHT_MICROPYTHON_SRC={given} is not a file"
            )
        return path, _sha256(path)
    if SHARED_TARBALL.is_file():
        digest = _sha256(SHARED_TARBALL)
        if digest != SHARED_SHA256:
            raise BuildError(
                f"step 'check source' failed: {SHARED_TARBALL} has sha256 {digest}, "
                f"expected {SHARED_SHA256}; the file is damaged or not the v{VERSION} source"
            )
        return SHARED_TARBALL, digest
    path = _download(scratch)
    return path, _sha256(path)


def build_key(source_sha256: str) -> str:
    text = json.dumps(
        {"source": source_sha256, "options": MAKE_OPTIONS, "manifest": MANIFEST, "recipe": RECIPE},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def is_current(key: str) -> bool:
    if not (INTERPRETER.is_file() and MPY_CROSS.is_file() and STAMP.is_file()):
        return False
    try:
        return bool(json.loads(STAMP.read_text()).get("key") == key)
    except (OSError, ValueError):
        return False


def _check_toolchain() -> None:
    for tool in ("make", "gcc"):
        if shutil.which(tool) is None:
            raise BuildError(
                f"step 'check toolchain' failed: `{tool}` is missing; install it "
                "(Debian: apt-get install build-essential gcc-multilib)"
            )
    # a 32-bit program needs the 32-bit C library and gcc's 32-bit runtime
    probe = subprocess.run(
        ["gcc", "-m32", "-x", "c", "-o", os.devnull, "-"],
        input=b"int main(void){return 0;}\n",
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        raise BuildError(
            "step 'check toolchain' failed: gcc cannot build 32-bit programs; install "
            "gcc-multilib (Debian: apt-get install gcc-multilib)"
        )


def _make(step: str, directory: Path, args: Sequence[str], log: Path) -> None:
    jobs = str(max(1, os.cpu_count() or 1))
    cmd = ["make", "-j", jobs, "-C", str(directory), *args]
    _say(f"{step} ...")
    with log.open("ab") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise BuildError(
            f"step '{step}' failed (exit {proc.returncode}); the last lines of {log}:\n"
            + "\n".join(tail)
            + "\nIf a header or library is missing, install build-essential and gcc-multilib."
        )


def build(force: bool = False) -> Path:
    """Build (if needed) and return the path of the 32-bit interpreter."""
    OUT_DIR.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="micropython32-", dir=OUT_DIR.parent) as tmp:
        scratch = Path(tmp)
        source, digest = find_source(scratch)
        key = build_key(digest)
        if not force and is_current(key):
            return INTERPRETER
        _check_toolchain()
        started = time.monotonic()
        _say(f"building MicroPython v{VERSION}, 32-bit, single-precision floats (under a minute)")
        _say(f"unpacking {source.name}")
        try:
            with tarfile.open(source) as tar:
                tar.extractall(scratch, filter="data")
        except (OSError, tarfile.TarError) as exc:
            raise BuildError(f"step 'unpack source' failed: {source}: {exc}") from None
        top = scratch / TOP
        if not (top / "ports" / "unix").is_dir():
            raise BuildError(f"step 'unpack source' failed: {source} holds no {TOP}/ports/unix")
        manifest = scratch / "manifest.py"
        manifest.write_text(MANIFEST)
        log = OUT_DIR.parent / "micropython32-build.log"
        log.write_text("")
        _make("build mpy-cross", top / "mpy-cross", [], log)
        unix = [*MAKE_OPTIONS, f"FROZEN_MANIFEST={manifest}"]
        _make("build the 32-bit unix port", top / "ports" / "unix", unix, log)
        built = top / "ports" / "unix" / "build-standard" / "micropython"
        _say("checking the interpreter")
        check = subprocess.run(
            [str(built), "-c", "import sys, ssl, asyncio; print(sys.maxsize, 1/3)"],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0 or check.stdout.split() != ["2147483647", "0.33333334"]:
            raise BuildError(
                "step 'check interpreter' failed: it is not 32-bit with single-precision "
                f"floats and ssl/asyncio: {check.stdout.strip()} {check.stderr.strip()}"
            )
        staging = scratch / "out"
        staging.mkdir()
        shutil.copy2(built, staging / "micropython")
        shutil.copy2(top / "mpy-cross" / "build" / "mpy-cross", staging / "mpy-cross")
        info = {"key": key, "version": VERSION, "source": str(source), "sha256": digest}
        (staging / "build.json").write_text(json.dumps(info, indent=2) + "\n")
        # swap the whole folder, so a build cut short never leaves half a result
        if OUT_DIR.exists():
            shutil.rmtree(OUT_DIR)
        staging.rename(OUT_DIR)
        _say(f"built {INTERPRETER} in {time.monotonic() - started:.0f} s")
    return INTERPRETER


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.upy_build",
        description="Build MicroPython's unix port 32-bit with single-precision floats "
        "(the ESP32 stand-in) into build/micropython32/, unless it is already current.",
    )
    parser.add_argument("--force", action="store_true", help="build even if it is current")
    parser.add_argument("--print-path", action="store_true", help="print the interpreter's path")
    args = parser.parse_args(argv)
    try:
        path = build(force=args.force)
    except BuildError as exc:
        print(f"micropython32: error: {exc}", file=sys.stderr)
        return 1
    if args.print_path:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
