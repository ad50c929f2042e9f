"""Tests of `hushlight dsp-report` (tools/dsp_report.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from rich.console import Console

from tools import dsp_report
from tools.cli import main
from tools.dsp_report import Band

INF = math.inf


def band(hz: float, error: float, tested: bool = True) -> Band:
    return Band(
        nominal_hz=hz,
        exact_hz=hz,
        goal_db=-3.0,
        firmware_db=-3.0 + error,
        class1=(-1.0, 1.0),
        class2=(-INF, 2.0),
        tested=tested,
    )


def render(rows: list[Band]) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(dsp_report.table(48000, "A", rows))
    return console.export_text()


def test_verdicts_follow_the_limits() -> None:
    rows = [
        band(100, 0.5),
        band(200, -1.0),
        band(400, 1.5),
        band(500, -40.0),
        band(800, 3.0),
        band(16000, 9.0, False),
    ]
    lines = {line.split()[0]: line.rstrip() for line in render(rows).splitlines() if line.strip()}
    assert lines["100"].endswith("OK")
    assert lines["200"].endswith("OK")  # on the limit is within
    assert lines["400"].endswith("class 2")
    assert lines["500"].endswith("class 2")  # class 2 has no lower limit here
    assert lines["800"].endswith("FAIL")
    assert lines["16k"].endswith("untested")
    assert "none/+2.0" in lines["100"]  # a missing limit is named, not printed as -inf
    assert "+0.50" in lines["100"] and "+3.00" in lines["800"]


def test_plot_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "r.png"
    rows = [band(10 * 2 ** (i / 3), 0.1 * (-1) ** i) for i in range(30)] + [band(20000, -30, False)]
    dsp_report.plot(48000, "A", rows, out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # a real chart, not an empty canvas


@pytest.mark.parametrize(
    ("argv", "phrase"),
    [
        (["--rate", "22050"], "--rate 22050 Hz is not supported by the firmware"),
        (["--out", "r.svg"], "is not a .png file"),
        (["--out", "nowhere/r.png"], "folder nowhere does not exist"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str],
    phrase: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["dsp-report", *argv]) == 2
    _, err = capsys.readouterr()
    assert phrase in err and err.count("\n") == 1


@pytest.mark.parametrize(("rate", "weighting"), [(48000, "A"), (16000, "C")])
def test_report_of_the_firmware_filters_passes_class_1(
    rate: int, weighting: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "response.png"
    argv = ["dsp-report", "--rate", str(rate), "--weighting", weighting.lower(), "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"{weighting}-weighting at {rate} Hz" in text
    assert "all within class 1" in text and "FAIL" not in text
    # one row per Table 3 band, 10 Hz to 20 kHz
    assert text.count(" OK") + text.count("untested") == 34
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_a_band_outside_class_1_fails_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [band(1000, 0.2), band(8000, -1.2), band(10000, -7.0, False)]
    monkeypatch.setattr(dsp_report, "bands", lambda rate, weighting, mic: rows)
    assert main(["dsp-report", "--out", str(tmp_path / "r.png")]) == 1
    text = capsys.readouterr().out
    assert "outside class 1 at 8k Hz" in text and "(tested 1k-8k Hz)" in text
