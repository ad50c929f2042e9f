"""`hushlight flash`: put MicroPython and the hushlight firmware on an ESP32.

The steps, each announced before it runs:

1. build      compile the firmware (`hushlight build`) into build/firmware/
2. erase      erase the whole flash (esptool; skipped with --no-erase)
3. write      write the MicroPython image at 0x1000 (esptool, progress bar)
4. copy       copy build/firmware/ to the board's filesystem (mpremote)
5. config     copy the sensor's config as config.json, and every file it
              names (the CA of `ca_file`), and the city's public release
              key as release.pub (--release-key), in one mpremote session
              (only with --config or --release-key)
6. reset      reset the board so it boots the firmware (mpremote)
7. selftest   open the technician console and wait until `selftest` passes;
              with an mqtts:// broker that proves the TLS connection (the
              firmware verifies the broker's certificate against the CA)

Nothing touches the board before every input is checked: the image (an
ESP32 image, by its header), the config (JSON, then the firmware's own
rules, run in MicroPython), the files it names (the CA must load) and the
release key (a public key the sensor can check releases with).

When a step fails the message says which step, why (read from the tool's
output and from the port itself) and what to try: the wrong port, no
permission on the port (the dialout group), or a board that is not in
download mode (hold BOOT).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.errors import ToolError, UsageError

HELP = "erase and flash MicroPython, copy the firmware and config, reset and self-test a board"

FLASH_OFFSET = "0x1000"  # where the ESP32 (not S2/S3/C3) boot image starts
CHIP = "esp32"
BAUD = 460800
MPREMOTE_TIMEOUT_S = 120.0
ESPTOOL_TIMEOUT_S = 300.0
SELFTEST_TIMEOUT_S = 90.0

_PERCENT = re.compile(rb"(\d{1,3}(?:\.\d+)?)\s?%")

# ESP-IDF app image header (esp_app_format.h): magic byte 0xE9 first, chip id
# as a little-endian uint16 at offset 12; 0 is the ESP32 this tool flashes at
# 0x1000 (S2, S3, C3 images start at 0x0 and carry other ids).
IMAGE_MAGIC = 0xE9
CHIP_ID_OFFSET = 12
ESP32_CHIP_ID = 0
MIN_IMAGE_BYTES = 64 * 1024
# the firmware's CA when the config names none (hushlight.app)
DEFAULT_CA = "ca.pem"
# the city's public release key on the board (protocol/ota.py)
RELEASE_KEY = "release.pub"


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


def wait_selftest(
    step: Step,
    port: str,
    timeout: float = SELFTEST_TIMEOUT_S,
    *,
    broker: str | None = None,
    ca: str | None = None,
) -> None:
    """Open the console on `port` and repeat `selftest` until every check passes.

    With `broker` (the URL of the config just copied) the sensor must be
    connected to that very broker; for mqtts:// that connection is the proof
    that TLS works, because the firmware accepts only a broker certificate
    that chains to its CA (`ca`, the file on the board)."""
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
                if broker is not None:
                    _prove_broker(step, port, checks, broker, ca)
                return
        if time.monotonic() > deadline:
            advice = (
                "run `hushlight selftest --port " + port + "` to see each check, and "
                "`hushlight monitor --port " + port + "` to watch the sensor"
            )
            if broker is not None and broker.startswith("mqtts://"):
                advice += (
                    f"; over TLS the broker's certificate must chain to {ca or DEFAULT_CA} and "
                    "name the host of the broker URL, and the sensor's clock must be set (NTP)"
                )
            raise step.fail(
                f"the self-test did not pass within {timeout:.0f} s ({'; '.join(failing)})", advice
            )
        time.sleep(2.0)


def _prove_broker(
    step: Step, port: str, checks: Sequence[Any], broker: str, ca: str | None
) -> None:
    detail = next((c.detail for c in checks if c.name == "broker"), "")
    if f"connected to {broker}" not in detail.split(";")[0]:
        raise step.fail(
            f"the sensor does not report a connection to its config's broker {broker} "
            f"(its self-test says: {detail or 'no broker check'})",
            "the board may still run an older config.json: copy it again "
            "(`hushlight provision --port` or flash with --config) and watch "
            f"`hushlight monitor --port {port}`",
        )
    if broker.startswith("mqtts://"):
        # (a list of brokers to fail over across names one scheme for all)
        which = f"a broker of {broker}" if "," in broker else broker
        print(
            f"      TLS: connected to {which}, the broker's certificate verified against "
            f"{ca or DEFAULT_CA} on the board",
            flush=True,
        )


@dataclass(frozen=True)
class BoardFile:
    """A file for the board's filesystem: `local` on this machine, `name` on the board."""

    local: Path
    name: str


def check_image(image: Path) -> Path:
    """`image` if it is an ESP32 image to write at 0x1000; UsageError saying why not otherwise."""
    if not image.is_file():
        raise UsageError(
            f"MicroPython image {image} does not exist; download the ESP32 generic .bin "
            "from micropython.org/download/ESP32_GENERIC/ and give its path"
        )
    try:
        with image.open("rb") as f:
            head = f.read(CHIP_ID_OFFSET + 2)
        size = image.stat().st_size
    except OSError as exc:
        raise UsageError(f"cannot read the MicroPython image {image}: {exc.strerror}") from None
    if size < MIN_IMAGE_BYTES:
        raise UsageError(f"{image} is only {size} bytes; that is not a MicroPython image")
    if head[0] != IMAGE_MAGIC:
        raise UsageError(
            f"{image} is not an ESP32 firmware image (its first byte is 0x{head[0]:02x}, not "
            f"0x{IMAGE_MAGIC:02X}); download the .bin (not .uf2 or .elf) of ESP32_GENERIC "
            "from micropython.org"
        )
    chip = int.from_bytes(head[CHIP_ID_OFFSET : CHIP_ID_OFFSET + 2], "little")
    if chip != ESP32_CHIP_ID:
        raise UsageError(
            f"{image} is an image for another chip of the ESP32 family (chip id {chip}, the "
            f"ESP32 is {ESP32_CHIP_ID}); download ESP32_GENERIC, not the S2, S3 or C3 image"
        )
    return image


def check_ca(path: Path, what: str = "CA certificate") -> None:
    """UsageError unless `path` holds a certificate (PEM or DER) a TLS client can trust."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(
            f"{what} {path} cannot be read ({exc.strerror}); give the PEM file of the CA "
            "that signed the broker's certificate"
        ) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            context.load_verify_locations(cadata=data.decode("ascii", "replace"))
        else:
            context.load_verify_locations(cadata=data)  # DER, which the firmware takes too
    except (ssl.SSLError, ValueError) as exc:
        raise UsageError(
            f"{what} {path} is not a PEM or DER certificate ({exc}); give the CA that signed "
            "the broker's certificate"
        ) from None


def _firmware_verdict(path: Path) -> str | None:
    """The firmware's own objection to the config at `path` (hushlight.config,
    run in MicroPython as on the board), or None when it would start with it."""
    from tools import upy

    code = (
        "from hushlight.config import Config\n"
        "from hushlight.errors import ConfigError\n"
        "try:\n"
        f"    Config({str(path.resolve())!r})\n"
        "    print('OK')\n"
        "except ConfigError as e:\n"
        "    print('ERROR ' + str(e))\n"
    )
    try:
        interp = upy.interpreter()
    except ToolError:
        interp = upy.interpreter("host")  # the stand-in is not built: the rules are the same
    out = upy.run_code(code, name=interp.name).strip().splitlines()
    if out and out[-1] == "OK":
        return None
    return out[-1].removeprefix("ERROR ") if out else "the firmware said nothing about it"


def check_config(path: Path) -> tuple[dict[str, Any], list[BoardFile]]:
    """The sensor config at `path` and every file the board needs from it
    (config.json first, then the CA); UsageError naming the first problem."""
    redo = "write it with `hushlight provision --out FILE`"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"config {path} does not exist; {redo}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"config {path} cannot be read ({exc}); {redo}") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"config {path} is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            f"{redo}"
        ) from None
    if not isinstance(config, dict):
        raise UsageError(
            f"config {path} holds a JSON {type(config).__name__}, not an object; {redo}"
        )
    objection = _firmware_verdict(path)
    if objection is not None:
        raise UsageError(f"config {path}: the firmware would not start with it: {objection}")
    ssid = config.get("wifi_ssid")
    if not isinstance(ssid, str) or not ssid or len(ssid.encode()) > 32:
        raise UsageError(
            f"config {path}: wifi_ssid is {ssid!r}; the board needs the name of its Wi-Fi "
            "network (1 to 32 bytes): give --wifi-ssid to `hushlight provision`"
        )
    files = [BoardFile(path, "config.json")]
    ca = config.get("ca_file")
    if ca is None and str(config["broker"]).startswith("mqtts://"):
        ca = DEFAULT_CA
    if ca is not None:
        if not isinstance(ca, str) or not ca or "/" in ca or ca in (".", ".."):
            raise UsageError(
                f"config {path}: ca_file {ca!r} is not a file name; the firmware reads the CA "
                "from the board's top folder: give a name such as ca.pem"
            )
        local = path.parent / ca
        if not local.is_file():
            raise UsageError(
                f"config {path} names the CA {ca!r} (ca_file), but {local} does not exist; "
                "put the broker's CA there, or provision again with --ca FILE"
            )
        check_ca(local, "the CA file of the config (ca_file)")
        files.append(BoardFile(local, ca))
    return config, files


def board_files(
    config_path: Path | None, release_key: Path | None
) -> tuple[dict[str, Any], list[BoardFile]]:
    """The sensor config (empty without one) and the files to copy with it:
    config.json, the CA it names, the public release key as release.pub;
    UsageError naming the first problem."""
    config: dict[str, Any] = {}
    files: list[BoardFile] = []
    if config_path is not None:
        config, files = check_config(config_path)
    if release_key is not None:
        from tools.release import read_public_key

        read_public_key(release_key)
        files.append(BoardFile(release_key, RELEASE_KEY))
    return config, files


def copy_to_board(step: Step, port: str, files: Sequence[BoardFile]) -> None:
    """Copy `files` to the board's top folder in one mpremote session, as `step`."""
    argv: list[str] = []
    for f in files:
        argv += [*(["+"] if argv else []), "fs", "cp", str(f.local), ":" + f.name]
    run_mpremote(step, port, argv)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    parser.add_argument(
        "--micropython-bin", type=Path, required=True, help="MicroPython image for the ESP32 (.bin)"
    )
    parser.add_argument(
        "--config", type=Path, help="the sensor's config.json (hushlight provision --out)"
    )
    parser.add_argument(
        "--release-key",
        type=Path,
        metavar="FILE",
        help="the city's public release key (release.pub of `hushlight keygen`); without it "
        "the sensor refuses every firmware update",
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

    # every input first: a bad one must not cost the board its flash
    image = check_image(args.micropython_bin)
    config, files = board_files(args.config, args.release_key)
    port: str = args.port
    out: Path = args.build_dir or build.DEFAULT_OUT
    titles = ["build the firmware with mpy-cross"]
    if not args.no_erase:
        titles.append(f"erase the flash of the ESP32 on {port}")
    titles += [f"write {image.name} at {FLASH_OFFSET}", "copy the firmware to the board"]
    if files:
        titles.append(f"copy {' and '.join(f.name for f in files)} to the board")
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
        if files:
            copy_to_board(next(steps), port, files)
        run_mpremote(next(steps), port, ["reset"], timeout=30.0)
        ca = next((f.name for f in files[1:] if f.name != RELEASE_KEY), None)
        wait_selftest(next(steps), port, args.selftest_timeout, broker=config.get("broker"), ca=ca)
    except StepError as exc:
        print(f"hushlight flash: {exc}", file=sys.stderr)
        return 1
    print(f"flashed and self-tested the sensor on {port}")
    return 0
