"""Tests of tools/make_example.py: the bundled recording is what the script synthesises."""

from __future__ import annotations

from pathlib import Path

from dsp import reference
from dsp.wavfile import WavReader, read
from tools import make_example


def test_bundled_example_matches_a_fresh_synthesis(tmp_path: Path) -> None:
    fresh = make_example.write_example(tmp_path / "example.wav")
    assert fresh.read_bytes() == make_example.EXAMPLE.read_bytes(), (
        "tools/data/example-night.wav drifted from tools/make_example.py; "
        "run `python -m tools.make_example` and commit the result"
    )


def test_example_is_small_16_bit_mono_at_a_supported_rate() -> None:
    wav = WavReader(make_example.EXAMPLE)
    assert (wav.rate, wav.channels, wav.bits) == (16000, 1, 16)
    assert 10.0 <= wav.seconds <= 15.0
    assert make_example.EXAMPLE.stat().st_size <= 1_000_000


def test_example_is_a_quiet_street_then_a_shout_then_quiet() -> None:
    rate, x = read(make_example.EXAMPLE)
    laeq = [iv.laeq for iv in reference.measure(rate, x, 1.0)]
    quiet = laeq[:5] + laeq[7:]
    shout = laeq[5:7]
    assert max(quiet) < 50.0
    assert min(shout) > 75.0
    # the Leuven trigger (LAFmax >= 70 dB(A)) fires only around the shout
    lafmax = [iv.lafmax for iv in reference.measure(rate, x, 1.0)]
    assert [i for i, v in enumerate(lafmax) if v >= 70.0] == [5, 6, 7]
