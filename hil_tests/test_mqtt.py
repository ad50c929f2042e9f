"""What the sensor puts on the broker: levels as `hushlight replay` computes them, no loss
across a broker outage, the last will on power loss, remote config applied and echoed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dsp import signals
from dsp.wavfile import write_wav
from hil_tests.conftest import Target, start_virtual
from protocol import topics
from tests.tools.virtual import Sub, publish
from tools.broker import Mosquitto

# a fixed virtual time origin, UTC epoch s: past 2**30, and with a fraction,
# neither of which a float32 sensor may round away
ORIGIN = "1781298000.5"
ORIGIN_MS = 1_781_298_000_500
RATE = 16000


def is_status(**want: Any) -> Callable[[str, Any], bool]:
    return lambda t, v: (
        t.endswith("/status")
        and isinstance(v, dict)
        and all(v.get(k) == x for k, x in want.items())
    )


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto() as broker:
        yield broker


@pytest.mark.virtual_only
def test_levels_on_the_broker_match_replay(tmp_path: Path, fresh: Mosquitto) -> None:
    # a quiet street, then a 1 kHz tone burst at -40 dBFS (80 dB SPL)
    x = signals.pink_noise(RATE, 5.0, -72.0, seed=7)
    x[2 * RATE : 3 * RATE + RATE // 2] += signals.sine(RATE, 1000.0, 1.5, -40.0)
    wav = tmp_path / "street.wav"
    write_wav(wav, RATE, x, "pcm24")
    sub = Sub(fresh.port, "hushlight/v1/hil/sensors/wav-01/#")
    sub.ready()
    try:
        target = start_virtual(
            tmp_path,
            fresh,
            "wav-01",
            "--wav",
            str(wav),
            "--time-origin",
            ORIGIN,
            wait_levels=False,
        )
        assert target.virtual is not None
        assert target.virtual.proc.wait(60) == 0, target.virtual.output()
        sub.wait_for(is_status(state="offline"), 10, "offline status")
        got = sorted(sub.of("levels"), key=lambda r: r["seq"])
    finally:
        sub.close()
    replay = subprocess.run(
        [sys.executable, "-m", "tools.cli", "replay", str(wav)],
        capture_output=True,
        text=True,
        check=True,
    )
    expected = [json.loads(line) for line in replay.stdout.splitlines() if line.startswith("{")]
    whole = [r for r in expected if r["t1"] - r["t0"] == 1.0]
    assert len(got) == len(whole) == 5
    for rec, ref in zip(got, whole, strict=True):
        assert rec["t0"] == ORIGIN_MS + round(ref["t0"] * 1000)
        assert rec["t1"] == ORIGIN_MS + round(ref["t1"] * 1000)
        assert (rec["laeq"], rec["lafmax"], rec["lceq"]) == (
            ref["laeq"],
            ref["lafmax"],
            ref["lceq"],
        )
    # and the burst shows where it was: about 80 dB(A) (A weighting is 0 dB at 1 kHz)
    assert abs(max(r["laeq"] for r in got) - 80.0) < 0.5


@pytest.mark.virtual_only
def test_broker_outage_loses_no_record(tmp_path: Path, fresh: Mosquitto) -> None:
    sub = Sub(fresh.port, "hushlight/v1/hil/sensors/out-01/#", client_id="hil-outage")
    sub.ready()
    target = start_virtual(tmp_path, fresh, "out-01", "--synthetic", "street", "--speed", "4")
    assert target.virtual is not None
    try:
        sub.wait_for(lambda t, v: t.endswith("/levels") and v["seq"] >= 4, 20, "first records")
        fresh.stop()
        time.sleep(5.0)  # about 20 records made while the broker is away
        fresh.start()
        made = _status_seq(target)
        # the backlog and the new records may interleave: wait until every seq up to
        # one made after the restart has come, or report which never did
        deadline = time.monotonic() + 40
        while True:
            seqs = {v["seq"] for v in sub.of("levels") if isinstance(v, dict)}
            missing = sorted(set(range(made + 1)) - seqs)
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not missing, missing
    finally:
        target.virtual.kill()
        sub.close()


def _status_seq(target: Target) -> int:
    """The seq of a record the sensor made after the broker came back."""
    with target.console() as console:
        [record] = list(console.stream("levels", count=1))
    return int(record["seq"])


@pytest.mark.virtual_only
def test_last_will_on_power_loss(tmp_path: Path, hil_broker: Mosquitto) -> None:
    keepalive = 5
    sub = Sub(hil_broker.port, "hushlight/v1/hil/sensors/lwt-01/status")
    target = start_virtual(
        tmp_path, hil_broker, "lwt-01", "--synthetic", "quiet", keepalive=keepalive
    )
    assert target.virtual is not None
    try:
        sub.wait_for(is_status(state="online"), 20, "online status")
        target.kill()
        # MQTT 3.1.1, 3.1.2.10: the broker acts after 1.5 keepalives without a packet;
        # a killed process's socket closes at once, so it is usually immediate.
        sub.wait_for(is_status(state="offline"), 1.5 * keepalive + 2, "the last will")
    finally:
        target.virtual.kill()
        sub.close()
    late = Sub(hil_broker.port, "hushlight/v1/hil/sensors/lwt-01/status")
    try:
        late.wait_for(is_status(state="offline"), 10, "the retained offline status")
    finally:
        late.close()


def test_remote_config_is_applied_and_echoed(target: Target) -> None:
    if target.broker_port is None:
        pytest.skip("give --broker-url to watch the board's MQTT traffic")
    topic = topics.config(target.site, target.sensor)
    sub = Sub(target.broker_port, f"hushlight/v1/{target.site}/sensors/{target.sensor}/status")
    rev = int(time.time()) % 100000
    try:
        publish(
            target.broker_port,
            topic,
            json.dumps({"rev": rev, "peak_threshold_db": 71}),
            retain=True,
        )
        _, status = sub.wait_for(is_status(config_rev=rev), 30, f"config_rev {rev} in status")
        with target.console() as console:
            [got] = console.command("get peak_threshold_db")
        assert got["value"] == 71
        assert status["state"] == "online"
    finally:
        publish(target.broker_port, topic, "", retain=True)  # no retained config left behind
        sub.close()
