"""`hushlight replay`: what a sensor would have reported for a WAV recording.

The recording is read block by block (an hour-long file never sits in memory)
and measured by one of two engines:

- ``firmware`` (default): the firmware's own meter, running in the real
  MicroPython interpreter (`firmware/hushlight/replay_main.py`); the first
  channel goes to it as the I2S int32 words an INMP441 would have delivered,
  raw little-endian on its stdin, and its JSON lines come back on stdout;
- ``reference``: the float64 reference meter of `dsp.reference`.

Either way stdout gets one JSON object per interval: ``t0``, ``t1`` (s from
the start of the file), ``laeq``, ``lafmax``, ``lceq`` (dB, 0.01 dB). The
two engines agree to a few hundredths of a dB (tests/tools/test_replay.py
states the tolerance); digital silence is the exception, which the firmware
reports at its quantisation floor and the reference at -100 dB.

`Settings` carries the options (interval, sensitivity, calibration offset,
microphone equaliser); `firmware_levels` runs the firmware meter on words
held in memory, for tests and benchmarks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
import numpy.typing as npt

from dsp import reference
from dsp.errors import WavFormatError
from dsp.wavfile import WavReader
from dsp.weighting import MIC_LF_CORNER_HZ
from tools import upy
from tools.errors import ToolError, UsageError

HELP = "print the levels a sensor would report for a WAV recording, one JSON line per interval"

ENGINES: Final = ("firmware", "reference")
REPLAY_SCRIPT: Final = upy.FIRMWARE_DIR / "hushlight" / "replay_main.py"
# Bounds that catch a typo (a sign, a missing digit) without ruling out any
# real MEMS microphone; the offset bound is the one the sensor's config accepts
# (protocol/schema.py).
SENSITIVITY_RANGE: Final = (-80.0, 0.0)
OFFSET_LIMIT_DB: Final = 20.0
# Files shorter than this finish before a progress line would help.
PROGRESS_AFTER_S: Final = 60.0
# seconds of audio read and handed to the meter at a time
CHUNK_S: Final = 1


def configure(parser: argparse.ArgumentParser) -> None:
    upy.add_option(parser)
    parser.add_argument("wav", metavar="FILE.wav", type=Path, help="the recording to replay")
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="firmware",
        help="firmware: the sensor's meter in MicroPython (default); reference: float64 meter",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="length of each reported interval, a multiple of 0.125 s (default 1)",
    )
    parser.add_argument(
        "--sensitivity-dbfs",
        type=float,
        default=-26.0,
        metavar="DBFS",
        help="microphone output in dBFS at 94 dB SPL, 1 kHz (default -26, the INMP441)",
    )
    parser.add_argument(
        "--calibration-offset-db",
        type=float,
        default=0.0,
        metavar="DB",
        help="calibration offset added to every level (default 0)",
    )
    parser.add_argument(
        "--mic",
        choices=sorted(MIC_LF_CORNER_HZ),
        default=None,
        help="equalise this microphone's low-frequency roll-off, as a sensor set up for it does",
    )


@dataclass(frozen=True)
class Settings:
    """What the meter is told besides the samples, as `hushlight replay` takes it."""

    interval_s: float = 1.0
    sensitivity_dbfs: float = -26.0
    calibration_offset_db: float = 0.0
    mic: str | None = None  # equaliser preset of dsp.weighting, None = flat microphone

    def check(self) -> None:
        """Raise UsageError for a value the meter cannot use, naming the option."""
        try:
            reference.blocks_per_interval(self.interval_s)
        except ValueError:
            raise UsageError(
                f"--interval {self.interval_s:g} s is not a positive multiple of 0.125 s "
                "(the meter's block); give e.g. 0.125, 0.5, 1 or 60"
            ) from None
        low, high = SENSITIVITY_RANGE
        sens = self.sensitivity_dbfs
        if not (math.isfinite(sens) and low <= sens <= high):
            raise UsageError(
                f"--sensitivity-dbfs {sens:g} is outside {low:g}..{high:g} dBFS; "
                "give the microphone's output at 94 dB SPL (the INMP441's is -26)"
            )
        offset = self.calibration_offset_db
        if not (math.isfinite(offset) and abs(offset) <= OFFSET_LIMIT_DB):
            raise UsageError(
                f"--calibration-offset-db {offset:g} is outside "
                f"-{OFFSET_LIMIT_DB:g}..{OFFSET_LIMIT_DB:g} dB, the range a sensor accepts; "
                "give the offset the calibration found"
            )
        if self.mic is not None and self.mic not in MIC_LF_CORNER_HZ:
            raise UsageError(
                f"--mic {self.mic!r} is not a known microphone; "
                f"give one of {', '.join(sorted(MIC_LF_CORNER_HZ))}"
            )

    def runner_args(self, rate: int) -> list[str]:
        """Arguments of the firmware's replay_main.py for these settings at `rate`."""
        # repr keeps every digit: "%g" would round a sensitivity such as -26.1234567
        args = [
            "--rate",
            str(rate),
            "--interval",
            repr(float(self.interval_s)),
            "--sensitivity-dbfs",
            repr(float(self.sensitivity_dbfs)),
            "--calibration-offset-db",
            repr(float(self.calibration_offset_db)),
        ]
        return args if self.mic is None else [*args, "--mic", self.mic]


def open_wav(path: Path) -> WavReader:
    try:
        return WavReader(path)
    except WavFormatError as exc:
        raise UsageError(str(exc)) from None


def replay(
    wav: WavReader, engine: str = "firmware", settings: Settings | None = None
) -> Iterator[dict[str, Any]]:
    """The intervals of a recording, as the chosen engine reports them, as they come."""
    settings = settings or Settings()
    settings.check()
    if engine == "reference":
        return _bad_file_is_usage(_reference(wav, settings))
    if engine == "firmware":
        return _bad_file_is_usage(_firmware(wav, settings))
    raise UsageError(f"engine {engine!r} is unknown; give one of {', '.join(ENGINES)}")


def _bad_file_is_usage(records: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    # a file can turn out broken after its header (a NaN sample, cut while
    # read): that is still the user's file, not a fault of the meter
    try:
        yield from records
    except WavFormatError as exc:
        raise UsageError(str(exc)) from None


def _reference(wav: WavReader, settings: Settings) -> Iterator[dict[str, Any]]:
    meter = reference.ReferenceMeter(wav.rate, mic=settings.mic)

    def blocks() -> Iterator[reference.Block]:
        for x in wav.samples(CHUNK_S * wav.rate):
            yield from meter.process(x)

    for iv in reference.intervals(
        blocks(),
        wav.rate,
        settings.interval_s,
        sensitivity_dbfs=settings.sensitivity_dbfs,
        calibration_offset_db=settings.calibration_offset_db,
    ):
        yield iv.as_dict()


def _firmware(wav: WavReader, settings: Settings) -> Iterator[dict[str, Any]]:
    proc = upy.spawn(
        REPLAY_SCRIPT,
        *settings.runner_args(wav.rate),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    feed_errors: list[Exception] = []
    stderr_text: list[bytes] = []
    # The words go in on one thread while the levels come out on this one:
    # with both on one thread a full stdout pipe would stall the meter.
    feeder = threading.Thread(
        target=_feed, args=(wav, proc.stdin, feed_errors), name="replay-feed", daemon=True
    )
    drainer = threading.Thread(
        target=lambda: stderr_text.append(proc.stderr.read()),  # type: ignore[union-attr]
        name="replay-stderr",
        daemon=True,
    )
    feeder.start()
    drainer.start()
    try:
        for raw in proc.stdout:
            line = raw.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                # anything else the interpreter prints is a diagnostic, not a level
                print(line.decode(errors="replace"), file=sys.stderr)
                continue
            yield record
        status = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        feeder.join()
        drainer.join()
        proc.stdout.close()
        proc.stderr.close()
    if feed_errors and isinstance(feed_errors[0], WavFormatError):
        raise feed_errors[0]
    if status != 0 or feed_errors:
        detail = b"".join(stderr_text).decode(errors="replace").strip().splitlines()
        last = detail[-1] if detail else (str(feed_errors[0]) if feed_errors else "no message")
        raise ToolError(f"the firmware meter stopped with exit status {status}: {last}")


def firmware_levels(
    rate: int,
    words: npt.ArrayLike,
    settings: Settings | None = None,
    *,
    summary: bool = False,
    timeout: float = 120.0,
) -> list[dict[str, Any]]:
    """Run the firmware meter on I2S words held in memory (tests, benchmarks, short signals).

    With `summary`, the last record is the runner's minute statistics of the
    whole input (``"summary": true``; its percentiles cover the last 60 s).
    """
    settings = settings or Settings()
    settings.check()
    data = np.asarray(words, dtype="<i4").tobytes()
    extra = ["--summary"] if summary else []
    proc = upy.run(
        REPLAY_SCRIPT,
        *settings.runner_args(rate),
        *extra,
        input=data,
        timeout=timeout,
    )
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ToolError(
            f"the firmware meter stopped with exit status {proc.returncode}: "
            + (detail[-1] if detail else "no message")
        )
    out = []
    for line in proc.stdout.decode().splitlines():
        record = json.loads(line) if line.strip().startswith("{") else None
        if isinstance(record, dict):
            out.append(record)
    return out


def _feed(wav: WavReader, sink: IO[bytes], errors: list[Exception]) -> None:
    try:
        for words in wav.i2s_words(CHUNK_S * wav.rate):
            sink.write(words.astype("<i4").tobytes())
    except BrokenPipeError:
        pass  # the meter stopped early; its exit status and stderr tell why
    except Exception as exc:  # handed to the reading thread, which reports it
        errors.append(exc)
    finally:
        with contextlib.suppress(BrokenPipeError):
            sink.close()


def run(args: argparse.Namespace) -> int:
    upy.use(args.interpreter)
    if args.engine == "firmware":
        try:
            upy.interpreter()  # built? say so before the recording is read
        except ToolError as exc:
            raise UsageError(str(exc)) from None
    settings = Settings(args.interval, args.sensitivity_dbfs, args.calibration_offset_db, args.mic)
    settings.check()  # before the file: a typo in an option is named first
    wav = open_wav(args.wav)
    progress = sys.stderr.isatty() and wav.seconds >= PROGRESS_AFTER_S
    try:
        for record in replay(wav, args.engine, settings):
            print(json.dumps(record), flush=True)
            if progress:
                done = float(record.get("t1", 0.0))
                print(
                    f"\r{wav.path.name}: {done:.0f} of {wav.seconds:.0f} s",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
    except ToolError as exc:
        if isinstance(exc, UsageError):
            raise
        print(f"hushlight replay: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if progress:
            print(file=sys.stderr)
    return 0
