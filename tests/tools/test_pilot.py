"""tools.pilot: the demo's simulated earlier nights, stored and then read by `hushlight report`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.storage import Storage
from tools import demo, pilot
from tools.cli import main

# "33 % fewer peaks in the next 10 min, 95 % CI 18-39 %, p < 0.001", as % change (-33)
PEAKS = re.compile(r"^  peaks: (\d+) % (fewer|more) peaks in the next \d+ min, 95 % CI (.+?), p ")
# "1.8 dB quieter in the next 10 min, 95 % CI 1.4-2.2 dB quieter, p < 0.001", as dB (-1.8)
LAEQ = re.compile(r"^  LAeq: ([\d.]+) dB (quieter|louder) in the next \d+ min, 95 % CI (.+?), p ")


def _interval(text: str, down: str, up: str) -> tuple[float, float]:
    """A printed interval as (low, high) on a signed scale: reductions negative."""
    if m := re.fullmatch(rf"([\d.]+)-([\d.]+) {down}", text):
        return -float(m[2]), -float(m[1])
    if m := re.fullmatch(rf"([\d.]+)-([\d.]+) {up}", text):
        return float(m[1]), float(m[2])
    if m := re.fullmatch(rf"([\d.]+) {up} to ([\d.]+) {down}", text):
        return -float(m[2]), float(m[1])
    raise AssertionError(f"not a closed 95 % interval: {text!r}")


def _effects(out: str, zone: str, kind: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(estimate, low, high) of the peaks in % change and of LAeq in dB, as printed."""
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{zone}, {kind}: "))
    peaks = PEAKS.match(lines[at + 1])
    laeq = LAEQ.match(lines[at + 2])
    assert peaks and laeq, "\n".join(lines[at : at + 3])
    est_peaks = float(peaks[1]) * (-1 if peaks[2] == "fewer" else 1)
    est_db = float(laeq[1]) * (-1 if laeq[2] == "quieter" else 1)
    return (
        (est_peaks, *_interval(peaks[3], "%", "% more")),
        (est_db, *_interval(laeq[3], "dB quieter", "dB louder")),
    )


def test_report_on_the_demos_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's default history, then `hushlight report` on it: each zone's effects come
    with 95 % intervals around their estimates, and the stated truth falls in them."""
    db = tmp_path / "gateway.db"
    history = pilot.write_history(db, demo.site_config(), demo.NIGHT, demo.HISTORY_NIGHTS)
    assert main(["report", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert {(a.zone, a.kind) for a in history.arms} == {
        ("collegeberg", "dim"),
        ("stuk", "brighten"),
    }
    for arm in history.arms:
        assert arm.nudges >= 5 and arm.controls >= 5  # enough for an interval
        assert f"{arm.zone}, {arm.kind}: {arm.nudges} nudges vs {arm.controls} controls on" in out
        peaks, laeq = _effects(out, arm.zone, arm.kind)
        truth = (100.0 * (arm.truth.rate_ratio - 1.0), arm.truth.shift_db)
        # printed in whole % and tenths of a dB: the truth may sit a rounding step outside
        for (est, low, high), true, step in ((peaks, truth[0], 1.0), (laeq, truth[1], 0.1)):
            assert low <= est <= high, (arm, est, low, high)
            assert low - step <= true <= high + step, (arm, true, low, high)
    # the nights are those before the live one, and stored in the site's time zone
    assert f"Episodes from {history.first}T23:" in out and "(times in Europe/Brussels)" in out
    assert (demo.NIGHT.date() - history.last).days == 1
    assert (demo.NIGHT.date() - history.first).days == demo.HISTORY_NIGHTS


def test_history_is_labelled_and_kept_apart(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    history = pilot.write_history(db, demo.site_config(), demo.NIGHT, 3, say=lambda _: None)
    with Storage(db, read_only=True) as s:
        episodes = s.episodes()
    assert episodes and all(e.id.startswith("sim-") for e in episodes)
    assert all(e.ended_at is not None and e.end_reason == "quiet" for e in episodes)
    assert max(e.at for e in episodes) < demo.NIGHT.timestamp()
    assert sum(a.nudges + a.controls for a in history.arms) == len(episodes)
    lines = demo.history_lines(history)
    assert "SIMULATED" in lines[0] and f"{history.first} to {history.last}" in lines[0]
    for arm in history.arms:
        said = f"  {arm.zone}, {arm.kind}: {pilot.TRUTHS[arm.kind]} ({arm.nudges} nudges, "
        assert any(line.startswith(said) for line in lines), lines
    assert str(pilot.Truth(0.7, -2.0)) == "30 % fewer peaks, 2.0 dB quieter"
    assert str(pilot.Truth(1.1, 0.5)) == "10 % more peaks, 0.5 dB louder"
    # --history-nights 0 writes nothing and says so
    assert demo.earlier_nights(0, tmp_path / "none.db", print) is None
    assert not (tmp_path / "none.db").exists()
    assert "none (--history-nights 0)" in demo.history_lines(None)[0]
    steps = demo.next_steps("hushlight", tmp_path, kept=False)
    assert steps[0].startswith(f"hushlight report --db {db} ")


def test_store_leaves_out_episodes_that_share_a_minute(tmp_path: Path) -> None:
    """Two zones sharing a sensor: an episode whose minutes collide with an earlier one's is
    not written, so no stored minute adds up two episodes' levels."""
    a = pilot.simulate(1, nights=4, zone="a", sensors=("s1", "s2"), per_night=6.0)
    b = pilot.simulate(2, nights=4, zone="b", sensors=("s2", "s3"), per_night=6.0)
    with Storage(tmp_path / "x.db", peak_threshold_db=70.0) as s:
        kept = pilot.store(s, a + b)
        assert 0 < len(kept) < len(a) + len(b)
        for e in kept:
            sensors = sorted({m.sensor for m in e.before})
            stored = s.minute_levels(sensors, e.before[0].minute, e.after[-1].minute + 1)
            want = sorted((m.minute, m.sensor, m.peaks) for m in e.before + e.after)
            assert sorted((r.minute, r.sensor, r.peaks) for r in stored) == want
