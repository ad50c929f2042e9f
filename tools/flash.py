"""`hushlight flash`: put MicroPython and the hushlight firmware on an ESP32.

The steps, each announced before it runs:

1. build      compile the firmware (`hushlight build`) into build/firmware/
2. erase      erase the whole flash (esptool; skipped with --no-erase)
3. write      write the MicroPython image at 0x1000 (esptool, progress bar)
4. copy       copy build/firmware/ to the board's filesystem (mpremote)
5. config     copy the sensor's config.json (mpremote; only with --config)
6. reset      reset the board so it boots the firmware (mpremote)
7. selftest   open the technician console and wait until `selftest` passes

When a step fails the message says which step, why (read from the tool's
output and from the port itself) and what to try: the wrong port, no
permission on the port (the dialout group), or a board that is not in
download mode (hold BOOT).
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tools.errors import ToolError, UsageError

HELP = "erase and flash MicroPython, copy the firmware and config, reset and self-test a board"

FLASH_OFFSET = "0x1000"  # where the ESP32 (not S2/S3/C3) boot image starts
CHIP = "esp32"
BAUD = 460800
MPREMOTE_TIMEOUT_S = 120.0
ESPTOOL_TIMEOUT_S = 300.0
SELFTEST_TIMEOUT_S = 90.0

_PERCENT = re.compile(rb"(\d{1,3}(?:\.\d+)?)\s?%")


class StepError(ToolError):
    """A step of flashing or provisioning failed; the message says which, why and what to try."""


@dataclass(frozen=True)
class Step:
    number: int
    total: int
    title: str

    def announce(self) -> None:
        print(f"[{self.number}/{self.total}] {self.title} ...", flush=True)

    def fail(self, why: str, advice: str) -> StepError:
        return StepError(
            f"step {self.number}/{self.total} ({self.title}) failed: {why}\n  try: {advice}"
        )


def diagnose(port: str, output: str) -> tuple[str, str]:
    """(why, what to try) for a failed esptool/mpremote run on `port`, from its output.

    esptool says "busy or doesn't exist" for every failure to open the port and
    mpremote says "may be in use" for every failure, so the errno in the text
    and the port itself decide, in this order.
    """
    text = output.lower()
    exists = os.path.exists(port)
    if (
        "permission denied" in text
        or "errno 13" in text
        or (exists and not os.access(port, os.R_OK | os.W_OK))
    ):
        return (
            f"no permission to open {port}",
            "add yourself to the group that owns the port: `sudo usermod -aG dialout $USER`, "
            f"then log out and in again (check the group with `ls -l {port}`)",
        )
    if not exists or "errno 2]" in text or "no such file" in text:
        return (
            f"the port {port} does not exist",
            "plug the board in with a data USB cable and pick its port from "
            "`ls /dev/ttyUSB* /dev/ttyACM*` (on macOS /dev/cu.usbserial-*), then --port PORT",
        )
    if "errno 16" in text or "resource busy" in text or "could not exclusively lock" in text:
        return (
            f"{port} is in use by another program",
            "close the other serial monitor (screen, minicom, `hushlight monitor`) and retry",
        )
    if (
        "no serial data received" in text
        or "failed to connect" in text
        or "wrong boot mode" in text
        or "invalid head of packet" in text
    ):
        advice = (
            "put the board in download mode: hold BOOT, press and release EN (RESET), "
            "release BOOT, then run the command again"
        )
        if _is_pty(port):
            advice += (
                f"; {port} is a pseudo-terminal: a virtual sensor has nothing to flash "
                "(it runs firmware/ directly), use `hushlight selftest --port` on it instead"
            )
        return (f"the board on {port} did not answer the ROM bootloader", advice)
    if "raw repl" in text:
        return (
            f"MicroPython on {port} did not give its raw REPL",
            "press EN (RESET) and retry; if the firmware is stuck, run `hushlight flash` "
            "again without --no-erase",
        )
    if "failed to access" in text:
        return (
            f"mpremote could not open {port}",
            "close any other program using the port (screen, minicom, `hushlight monitor`), "
            "re-plug the board and retry",
        )
    last = "; ".join(line.strip() for line in output.strip().splitlines()[-3:])
    return (last or "the tool gave no reason", "re-plug the board and run the command again")


def _is_pty(port: str) -> bool:
    # Unix98 pseudo-terminal slaves have character-device majors 136-143 (Linux devices.txt).
    try:
        st = os.stat(port)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and 136 <= os.major(st.st_rdev) <= 143


def _tool(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def run_mpremote(
    step: Step,
    port: str,
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    timeout: float = MPREMOTE_TIMEOUT_S,
) -> str:
    """Run `mpremote connect PORT ARGV...` as `step`; its output, or a StepError."""
    step.announce()
    try:
        proc = subprocess.run(
            [*_tool("mpremote"), "connect", port, *argv],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        # mpremote waits forever for a raw REPL that never comes: a board
        # still in download mode, a busy firmware, or not MicroPython at all.
        advice = (
            "press EN (RESET) on the board, close any other serial monitor, "
            "and run the command again"
        )
        if _is_pty(port):
            advice += (
                f"; {port} is a pseudo-terminal: a virtual sensor's console does not speak "
                "mpremote's raw REPL, use `hushlight provision --out FILE` for it"
            )
        raise step.fail(
            f"MicroPython on {port} did not answer mpremote within {timeout:.0f} s", advice
        ) from None
    output = proc.stdout + proc.stderr
    # mpremote exits 0 on some connection errors but says so on stderr.
    if proc.returncode != 0 or "failed to access" in proc.stderr:
        raise step.fail(*diagnose(port, output))
    return output


def run_esptool(step: Step, port: str, argv: Sequence[str], *, progress: bool = False) -> str:
    """Run esptool for the ESP32 on `port` as `step`, with a progress bar when asked."""
    step.announce()
    command = [*_tool("esptool"), "--chip", CHIP, "--port", port, "--baud", str(BAUD), *argv]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = bytearray()
    from rich.progress import Progress

    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task(step.title, total=100.0)
        deadline = time.monotonic() + ESPTOOL_TIMEOUT_S
        while True:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            output += chunk
            # esptool redraws its progress with carriage returns: take the last figure.
            found = _PERCENT.findall(chunk)
            if found:
                bar.update(task, completed=min(100.0, float(found[-1])))
            if time.monotonic() > deadline:
                proc.kill()
                break
    code = proc.wait()
    text = output.decode(errors="replace")
    if code != 0:
        raise step.fail(*diagnose(port, text))
    return text


def wait_selftest(step: Step, port: str, timeout: float = SELFTEST_TIMEOUT_S) -> None:
    """Open the console on `port` and repeat `selftest` until every check passes."""
    from tools.selftest import run_checks

    step.announce()
    deadline = time.monotonic() + timeout
    failing: list[str] = []
    while True:
        try:
            checks = run_checks(port, timeout=min(30.0, max(5.0, deadline - time.monotonic())))
        except ToolError as exc:
            failing = [str(exc)]
        else:
            failing = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
            if not failing:
                print(f"      all {len(checks)} checks passed", flush=True)
                return
        if time.monotonic() > deadline:
            raise step.fail(
                f"the self-test did not pass within {timeout:.0f} s ({'; '.join(failing)})",
                "run `hushlight selftest --port " + port + "` to see each check, and "
                "`hushlight monitor --port " + port + "` to watch the sensor",
            )
        time.sleep(2.0)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    parser.add_argument(
        "--micropython-bin", type=Path, required=True, help="MicroPython image for the ESP32 (.bin)"
    )
    parser.add_argument(
        "--config", type=Path, help="the sensor's config.json (hushlight provision --out)"
    )
    parser.add_argument("--no-erase", action="store_true", help="keep the flash (and its files)")
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=None,
        help="where to build the firmware first (default: build/firmware)",
    )
    parser.add_argument(
        "--selftest-timeout",
        type=float,
        default=SELFTEST_TIMEOUT_S,
        help="seconds to wait for selftest",
    )


def run(args: argparse.Namespace) -> int:
    from tools import build

    image: Path = args.micropython_bin
    if not image.is_file():
        raise UsageError(
            f"MicroPython image {image} does not exist; download the ESP32 generic .bin "
            "from micropython.org/download/ESP32_GENERIC/ and give its path"
        )
    if image.stat().st_size < 64 * 1024:
        raise UsageError(
            f"{image} is only {image.stat().st_size} bytes; that is not a MicroPython image"
        )
    if args.config is not None and not args.config.is_file():
        raise UsageError(
            f"config {args.config} does not exist; make one with `hushlight provision --out FILE`"
        )
    port: str = args.port
    out: Path = args.build_dir or build.DEFAULT_OUT
    titles = ["build the firmware with mpy-cross"]
    if not args.no_erase:
        titles.append(f"erase the flash of the ESP32 on {port}")
    titles += [f"write {image.name} at {FLASH_OFFSET}", "copy the firmware to the board"]
    if args.config is not None:
        titles.append("copy config.json to the board")
    titles += ["reset the board", "wait for the self-test to pass"]
    steps = iter(Step(n, len(titles), t) for n, t in enumerate(titles, 1))
    try:
        step = next(steps)
        step.announce()
        try:
            built = build.build(out)
        except build.BuildError as exc:
            raise step.fail(str(exc), "fix the module, then flash again") from None
        print(f"      {len(built)} files, {sum(b.size for b in built):,} bytes", flush=True)
        if not args.no_erase:
            run_esptool(next(steps), port, ["erase-flash"])
        run_esptool(
            next(steps), port, ["write-flash", "-z", FLASH_OFFSET, str(image)], progress=True
        )
        # Give MicroPython its first boot (it formats the filesystem) before mpremote talks to it.
        time.sleep(2.0)
        names = sorted(p.name for p in out.iterdir())
        run_mpremote(next(steps), port, ["fs", "cp", "-r", *names, ":"], cwd=out)
        if args.config is not None:
            run_mpremote(next(steps), port, ["fs", "cp", str(args.config), ":config.json"])
        run_mpremote(next(steps), port, ["reset"], timeout=30.0)
        wait_selftest(next(steps), port, args.selftest_timeout)
    except StepError as exc:
        print(f"hushlight flash: {exc}", file=sys.stderr)
        return 1
    print(f"flashed and self-tested the sensor on {port}")
    return 0
