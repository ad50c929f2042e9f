"""Tests of `hushlight replay` (tools/replay.py): errors, options, and the two engines."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dsp import signals
from dsp.wavfile import write_wav
from tools import replay
from tools.cli import main

SUPPORTED = (
    "supported are 16-, 24- or 32-bit PCM or 32-bit float WAV at 48000, 44100, 32000 or 16000 Hz"
)


def _stdlib_wav(path: Path, rate: int, width: int, frames: int = 1600) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(frames * width))
    return path


def _float64_wav(path: Path) -> Path:
    fmt = struct.pack("<HHIIHH", 3, 1, 48000, 48000 * 8, 8, 64)
    data = np.zeros(4800).tobytes()
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def _bad(tmp: Path, name: str) -> tuple[Path, str]:
    if name == "8-bit":
        return _stdlib_wav(tmp / "a.wav", 48000, 1), "is 8-bit PCM at 48000 Hz"
    if name == "float64":
        return _float64_wav(tmp / "a.wav"), "is 64-bit float at 48000 Hz"
    if name == "22050":
        return _stdlib_wav(tmp / "a.wav", 22050, 2), "is 16-bit PCM at 22050 Hz"
    if name == "truncated":
        good = _stdlib_wav(tmp / "good.wav", 16000, 2)
        (tmp / "a.wav").write_bytes(good.read_bytes()[:-1000])
        return tmp / "a.wav", "is truncated: its header announces 3200 bytes of audio but only 2200"
    if name == "text":
        (tmp / "a.wav").write_text("this is a shopping list, not a recording\n")
        return tmp / "a.wav", "is not a WAV file"
    assert name == "missing"
    return tmp / "a.wav", "does not exist; give the path of a WAV file"


BAD = ["8-bit", "float64", "22050", "truncated", "text", "missing"]


@pytest.mark.parametrize("engine", ["firmware", "reference"])
@pytest.mark.parametrize("name", BAD)
def test_bad_wav_gives_one_line_naming_the_file_and_exit_2(
    tmp_path: Path, name: str, engine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path, phrase = _bad(tmp_path, name)
    assert main(["replay", str(path), "--engine", engine]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"hushlight replay: error: {path} ")
    assert phrase in err
    if name != "missing":
        assert SUPPORTED in err


@pytest.mark.parametrize("engine", ["firmware", "reference"])
def test_a_file_broken_after_its_header_stops_with_one_line(
    tmp_path: Path, engine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    x = signals.white_noise(16000, 3.0, -30.0, 2)
    x[40000] = np.nan  # 2.5 s in: the replay has printed two intervals by then
    path = tmp_path / "nan.wav"
    write_wav(path, 16000, x, "float32")
    argv = ["replay", str(path), "--engine", engine, "--interval", "0.5"]
    # the reading is done a second at a time, so the NaN stops it after 2 s
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert [json.loads(line)["t1"] for line in out.splitlines()] == [0.5, 1.0, 1.5, 2.0]
    assert err == (
        f"hushlight replay: error: {path} holds a non-finite float sample (frame 40000); "
        "give a recording of finite samples\n"
    )


def test_the_console_script_prints_no_traceback(tmp_path: Path) -> None:
    path, _ = _bad(tmp_path, "8-bit")
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "replay", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"hushlight replay: error: {path} is 8-bit PCM at 48000 Hz; {SUPPORTED}"
    ]


@pytest.mark.parametrize(
    ("option", "value", "phrase"),
    [
        ("--interval", "0.3", "--interval 0.3 s is not a positive multiple of 0.125 s"),
        ("--interval", "0", "--interval 0 s is not a positive multiple of 0.125 s"),
        ("--interval", "nan", "is not a positive multiple of 0.125 s"),
        ("--sensitivity-dbfs", "26", "--sensitivity-dbfs 26 is outside -80..0 dBFS"),
        (
            "--calibration-offset-db",
            "45",
            "--calibration-offset-db 45 is outside -20..20 dB, the range a sensor accepts",
        ),
    ],
)
def test_bad_options_are_named_before_any_work(
    tmp_path: Path, option: str, value: str, phrase: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ok.wav"
    write_wav(path, 16000, np.zeros(16000))
    assert main(["replay", str(path), option, value]) == 2
    _, err = capsys.readouterr()
    assert phrase in err and err.count("\n") == 1


def _noisy_wav(tmp: Path, rate: int, seconds: float, encoding: str = "pcm24") -> Path:
    # street-like pink noise with a louder tone in the middle, in a stereo file
    # whose second channel must be ignored
    x = signals.pink_noise(rate, seconds, -40.0, 11)
    mid = slice(rate, round(1.5 * rate))  # the tone fills 1.0-1.5 s
    x[mid] += signals.sine(rate, 1000.0, seconds, -20.0)[mid]
    path = tmp / f"noisy-{rate}.wav"
    write_wav(path, rate, np.stack([x, signals.white_noise(rate, seconds, -3.0, 12)], 1), encoding)
    return path


def test_reference_engine_prints_one_json_object_per_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 2.3 s at 0.5 s: four whole intervals, then two whole blocks (0.25 s); 0.05 s dropped
    path = _noisy_wav(tmp_path, 16000, 2.3)
    assert main(["replay", str(path), "--engine", "reference", "--interval", "0.5"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["t0"], r["t1"]) for r in records] == [
        (0.0, 0.5),
        (0.5, 1.0),
        (1.0, 1.5),
        (1.5, 2.0),
        (2.0, 2.25),
    ]
    for r in records:
        assert set(r) == {"t0", "t1", "laeq", "lafmax", "lceq"}
        assert r["lafmax"] >= r["laeq"] - 0.5  # the Fast maximum of a steady part is near its Leq
        assert all(round(r[k], 2) == r[k] for k in ("laeq", "lafmax", "lceq"))
    # the tone (-20 dBFS -> 100 dB) fills the third interval, 20 dB over the noise
    assert records[2]["laeq"] == pytest.approx(100.0, abs=0.1)
    assert records[1]["laeq"] < 90.0


def test_calibration_offset_and_sensitivity_shift_every_level(tmp_path: Path) -> None:
    path = _noisy_wav(tmp_path, 16000, 2.0)
    wav = replay.open_wav(path)
    base = list(replay.replay(wav, "reference"))
    moved = list(replay.replay(wav, "reference", replay.Settings(1.0, -38.0, 1.25)))
    for b, m in zip(base, moved, strict=True):
        for key in ("laeq", "lafmax", "lceq"):
            assert m[key] == pytest.approx(b[key] + 12.0 + 1.25, abs=0.011)


def test_mic_equaliser_is_applied_by_both_engines_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # pink noise has most of its energy low, where the INMP441 equaliser lifts
    # the response (its 60 Hz roll-off undone): LCeq rises, and both engines agree
    path = _noisy_wav(tmp_path, 32000, 1.0)
    out: dict[tuple[str, bool], dict[str, Any]] = {}
    for engine in ("firmware", "reference"):
        for mic in (False, True):
            argv = ["replay", str(path), "--engine", engine] + (["--mic", "inmp441"] if mic else [])
            assert main(argv) == 0
            out[engine, mic] = json.loads(capsys.readouterr().out)
    for mic in (False, True):
        assert out["firmware", mic]["lceq"] == pytest.approx(
            out["reference", mic]["lceq"], abs=0.05
        )
    assert out["reference", True]["lceq"] > out["reference", False]["lceq"] + 1.0


def test_progress_goes_to_a_terminal_stderr_for_long_files_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    long_wav = tmp_path / "long.wav"
    write_wav(long_wav, 16000, signals.white_noise(16000, 61.0, -40.0, 1))
    short_wav = tmp_path / "short.wav"
    write_wav(short_wav, 16000, signals.white_noise(16000, 2.0, -40.0, 1))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["replay", str(long_wav), "--engine", "reference", "--interval", "10"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 7  # six whole 10 s intervals and the last 1 s
    assert "\rlong.wav: 10 of 61 s" in err and "\rlong.wav: 61 of 61 s" in err
    assert main(["replay", str(short_wav), "--engine", "reference"]) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert main(["replay", str(long_wav), "--engine", "reference", "--interval", "10"]) == 0
    assert capsys.readouterr().err == ""


def test_a_closed_stdout_ends_the_replay_quietly(tmp_path: Path) -> None:
    # as in `hushlight replay long.wav | head -1`; 1600 lines (over 100 KB) are
    # more than a pipe buffers, so the replay does hit the closed pipe
    path = tmp_path / "n.wav"
    write_wav(path, 16000, signals.silence(16000, 200.0))
    argv = [sys.executable, "-m", "tools.cli", "replay", str(path)]
    with subprocess.Popen(
        [*argv, "--engine", "reference", "--interval", "0.125"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read()
        status = proc.wait()
    assert json.loads(first)["t1"] == 0.125
    assert err == b""
    assert status == 0


@pytest.mark.parametrize(
    ("rate", "encoding"), [(48000, "pcm24"), (44100, "float32"), (16000, "pcm16")]
)
def test_firmware_and_reference_engines_agree_on_a_noisy_recording(
    tmp_path: Path, rate: int, encoding: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Stated tolerance: LAeq and LCeq within 0.05 dB (fixed-point rounding and
    # the 0.01 dB output step); LAFmax within 0.1 dB, because the firmware
    # updates Fast per 1 ms sub-block where the reference does it per sample
    # (at most 0.035 dB, dsp/fixedpoint.py).
    path = _noisy_wav(tmp_path, rate, 2.5, encoding)
    records = {}
    for engine in ("firmware", "reference"):
        assert main(["replay", str(path), "--engine", engine, "--interval", "0.5"]) == 0
        out, err = capsys.readouterr()
        assert err == ""
        records[engine] = [json.loads(line) for line in out.splitlines()]
    fw, ref = records["firmware"], records["reference"]
    assert len(fw) == len(ref) == 5
    for f, r in zip(fw, ref, strict=True):
        assert (f["t0"], f["t1"]) == pytest.approx((r["t0"], r["t1"]), abs=1e-9)
        assert f["laeq"] == pytest.approx(r["laeq"], abs=0.05)
        assert f["lceq"] == pytest.approx(r["lceq"], abs=0.05)
        assert f["lafmax"] == pytest.approx(r["lafmax"], abs=0.1)
    assert fw[2]["laeq"] > fw[1]["laeq"] + 10  # the tone is there, for both


def test_a_failing_firmware_runner_is_reported_with_its_last_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "broken_main.py"
    script.write_text(
        "import sys\n"
        'print(\'{"t0": 0.0, "t1": 1.0, "laeq": 1.0, "lafmax": 1.0, "lceq": 1.0}\')\n'
        "print('a diagnostic line')\n"
        "sys.stderr.write('replay_main: error: out of memory in the test\\n')\n"
        "sys.exit(3)\n"
    )
    monkeypatch.setattr(replay, "REPLAY_SCRIPT", script)
    path = _noisy_wav(tmp_path, 16000, 1.0)
    assert main(["replay", str(path)]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["t1"] == 1.0  # what came before the failure is kept
    assert "a diagnostic line" in err
    assert err.rstrip().endswith(
        "hushlight replay: error: the firmware meter stopped with exit status 3: "
        "replay_main: error: out of memory in the test"
    )


@pytest.mark.parametrize("engine", ["firmware", "reference"])
def test_replay_streams_instead_of_reading_the_whole_file_first(
    tmp_path: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 200 s read one second at a time, 8 intervals a second. The reference
    # engine yields its first interval after the first second is read. The
    # firmware engine runs on threads, so only a bound is certain: the pipes
    # (64 KiB each on Linux) hold about 115 s of its output lines and well
    # under a second of words, so it cannot have read the whole file.
    path = tmp_path / "long.wav"
    write_wav(path, 16000, signals.white_noise(16000, 200.0, -40.0, 5), "pcm16")
    wav = replay.open_wav(path)
    read: list[int] = []
    name = "samples" if engine == "reference" else "i2s_words"
    blocks = getattr(wav, name)

    def counting(block_frames: int) -> Any:
        for block in blocks(block_frames):
            read.append(block.size)
            yield block

    monkeypatch.setattr(wav, name, counting)
    records = replay.replay(wav, engine, replay.Settings(interval_s=0.125))
    assert next(records)["t1"] == 0.125
    assert len(read) == 1 if engine == "reference" else 1 <= len(read) < 150
    assert sum(1 for _ in records) == 1599
    assert sum(read) == 200 * 16000
