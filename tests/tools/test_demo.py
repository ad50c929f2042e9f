"""`hushlight demo`: the whole street end to end on a short script, and its argument checks."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tools.broker import Mosquitto
from tools.cli import main


def _demo(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_short_night_end_to_end_on_a_real_broker(broker: Mosquitto) -> None:
    """100 s of the night (quiet, then the shouting group) at 20x on Mosquitto.

    The group passes every sensor at 70-80 dB(A) (tests/tools/test_scenes.py
    checks the synthesis), above both zones' thresholds (tools/demo_config.toml),
    so each zone must have nudged once and its lights moved.
    """
    proc = _demo(
        "--seconds", "100", "--speed", "20", "--lead-in", "6", "--plain", "--broker", broker.url
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # up before 23:00, or (on a machine busy with other work) a little into the night
    assert "the night begins at 23:00:00" in out or "this machine is slow" in out
    assert "compressed night: 100 s of street sound" in out
    summary = out[out.index("summary of the night") :]
    nudges = re.findall(r"^  \d\d:\d\d:\d\d (\S+): (dim|brighten)", summary, re.M)
    assert sorted(nudges) == [("collegeberg", "dim"), ("stuk", "brighten")]
    dimmed = float(re.search(r"light minutes dimmed: ([\d.]+)", summary).group(1))  # type: ignore[union-attr]  # float() fails loudly if absent
    assert dimmed > 0
    # seven sensors, 100 s of night plus the lead-in, one record a second each
    received = int(re.search(r"records received: (\d+)", summary).group(1))  # type: ignore[union-attr]  # as above
    assert received >= 7 * 100
    assert "has not come online" not in out
    assert "stopped" not in out


def test_bad_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for args, says in [
        (("--speed", "500"), "--speed 500"),
        (("--seconds", "5"), "--seconds 5"),
        (("--lead-in", "0"), "--lead-in 0"),
        (("--broker", "mqtts://broker.example:8883"), "plain mqtt://"),
        (("--broker", "http://x"), "http://x"),
    ]:
        assert main(["demo", *args]) == 2, args
        err = capsys.readouterr().err
        assert says in err
        assert len(err.strip().splitlines()) == 1
