"""replay_main.py: the firmware meter over raw I2S words, one JSON line per interval."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest

from dsp import signals
from tools import upy

SCRIPT = upy.FIRMWARE_DIR / "hushlight" / "replay_main.py"


def replay(words: np.ndarray, *args: str) -> tuple[int, list[dict[str, object]], str]:
    proc = upy.run(SCRIPT, *args, input=np.asarray(words, dtype="<i4").tobytes())
    lines = [json.loads(s) for s in proc.stdout.decode().splitlines() if s.strip()]
    return proc.returncode, lines, proc.stderr.decode()


def test_whole_intervals_then_the_partial_one_then_the_summary() -> None:
    rate = 44100
    x = signals.sine(rate, 1000.0, 2.3, -10.0)  # 18 whole blocks of 5512, then 2214 samples
    status, lines, err = replay(
        signals.to_i2s_words(x), "--rate", "44100", "--interval", "1", "--summary"
    )
    assert status == 0, err
    intervals, summary = lines[:-1], lines[-1]
    block = 5512 / rate
    assert [(r["t0"], r["t1"]) for r in intervals] == [
        pytest.approx((0.0, 8 * block)),
        pytest.approx((8 * block, 16 * block)),
        pytest.approx((16 * block, 18 * block)),
    ]
    # -10 dBFS at 1 kHz with the default -26 dBFS sensitivity: 120 - 10 dB
    for r in intervals[1:]:
        assert r["laeq"] == pytest.approx(110.0, abs=0.02)
        assert r["lceq"] == pytest.approx(110.0, abs=0.02)
    assert summary["summary"] is True
    assert summary["laeq"] == pytest.approx(110.0, abs=0.05)
    assert set(summary) >= {"lafmax", "lamin", "l10", "l50", "l90", "lceq", "peaks"}


def test_times_stay_exact_through_a_night() -> None:
    # interval bounds hours into a recording: a float32 holds 28800.125 s but
    # MicroPython printed it 28800.124; the times are made from the sample count
    cases = [(28800 * 16000 + 2000, 16000), (3600 * 48000 + 6000, 48000), (123456789, 44100)]
    code = (
        "import json\nfrom hushlight.replay_main import _seconds\n"
        f"print(json.dumps([_seconds(n, r) for n, r in {cases!r}]))"
    )
    got = json.loads(upy.run_code(code))
    ns = Decimal("0.000000001")
    want = [str((Decimal(n) / Decimal(r)).quantize(ns, ROUND_HALF_UP)) for n, r in cases]
    assert got == want == ["28800.125000000", "3600.125000000", "2799.473673469"]


def test_calibration_and_sensitivity_shift_the_levels() -> None:
    w = signals.to_i2s_words(signals.sine(16000, 1000.0, 1.0, -20.0))
    args = ("--rate", "16000", "--interval", "0.5", "--sensitivity-dbfs", "-30")
    _, lines, _ = replay(w, *args, "--calibration-offset-db", "1.25")
    # 94 - (-30) - 20 + 1.25, in the second half second (after the start transient)
    assert len(lines) == 2
    assert lines[1]["laeq"] == pytest.approx(105.25, abs=0.02)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--rate", "22050"), "22050"),
        (("--interval", "0.3"), "multiple of 0.125"),
        (("--rate", "fast"), "needs a number"),
        (("--volume", "3"), "unknown option"),
    ],
)
def test_bad_options_exit_2_with_a_sentence(args: tuple[str, ...], message: str) -> None:
    status, lines, err = replay(np.zeros(16, dtype=np.int64), *args)
    assert status == 2 and not lines
    assert message in err
