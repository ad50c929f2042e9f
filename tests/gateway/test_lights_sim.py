"""The simulated lighting controller: ramp, expiry without help, refusals, CLI errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.clock import ScaledClock
from tests.gateway.clocks import FixedClock
from tools.broker import Mosquitto
from tools.lights_sim import LightsSim


def cmd(**fields: Any) -> bytes:
    fields.setdefault("zone", "z")
    return json.dumps(fields).encode()


def test_ramp_is_linear_and_ends_on_target() -> None:
    clock = FixedClock(1000.0)
    sim = LightsSim("s", ["g"], 80.0, clock)
    assert sim.command(
        "g", cmd(cmd_id="c1", level=40, ramp_s=10, expires_at=1600, reason="noise"), 1000.0
    )
    g = sim.groups["g"]
    # a quarter of the way through a ramp from 80 to 40
    assert g.level(1002.5) == pytest.approx(80 + (40 - 80) * 0.25)
    assert g.ramping(1009.9) and not g.ramping(1010.0)
    assert g.level(1010.0) == 40 and g.level(1500.0) == 40
    assert g.source == "override" and g.cmd_id == "c1"


def test_expiry_returns_to_programme_by_itself() -> None:
    clock = FixedClock(1000.0)
    sim = LightsSim("s", ["g"], 70.0, clock)
    sim.command("g", cmd(cmd_id="c1", level=30, ramp_s=0, expires_at=1100, reason="noise"), 1000.0)
    assert sim.tick(1099.9) == []
    assert sim.tick(1100.0) == ["g"]
    g = sim.groups["g"]
    assert g.source == "programme" and g.expires_at is None
    assert g.level(1200.0) == 70.0
    assert sim.tick(1300.0) == []  # expires once


def test_release_with_null_level_ramps_back_to_programme() -> None:
    sim = LightsSim("s", ["g"], 80.0, FixedClock(0.0))
    sim.command("g", cmd(cmd_id="c1", level=20, ramp_s=0, expires_at=500, reason="noise"), 0.0)
    assert sim.command(
        "g", cmd(cmd_id="c1", level=None, ramp_s=4, expires_at=10, reason="quiet"), 10.0
    )
    g = sim.groups["g"]
    assert g.source == "programme"
    assert g.level(12.0) == pytest.approx(20 + (80 - 20) * 0.5)
    assert sim.tick(600.0) == []  # the released override does not "expire" later


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"not json", "bad_json"),
        (b"[1,2]", "bad_type"),
        (cmd(level=40, ramp_s=1, expires_at=2000, reason="t"), "missing_field"),
        (cmd(cmd_id="x", level=40, ramp_s=1, reason="t"), "missing_field"),
        (cmd(cmd_id="x", level=40, ramp_s=1, expires_at=999, reason="t"), "already past"),
        (cmd(cmd_id="x", level=140, ramp_s=1, expires_at=2000, reason="t"), "out_of_range"),
        (cmd(cmd_id="x", level=True, ramp_s=1, expires_at=2000, reason="t"), "bad_type"),
        (cmd(cmd_id="x", level=40, ramp_s=-1, expires_at=2000, reason="t"), "out_of_range"),
        (b'{"cmd_id":"x","level":40,"ramp_s":1,"expires_at":NaN,"reason":"t"}', "bad_json"),
    ],
)
def test_bad_commands_are_refused_and_change_nothing(
    payload: bytes, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    sim = LightsSim("s", ["g"], 80.0, FixedClock(1000.0))
    assert not sim.command("g", payload, 1000.0)
    assert sim.refused == 1
    assert why in caplog.text
    g = sim.groups["g"]
    assert (g.source, g.level(1000.0), g.cmd_id) == ("programme", 80.0, None)


def test_a_command_with_an_older_lease_epoch_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    sim = LightsSim("s", ["g"], 80.0, FixedClock(1000.0))
    base = {"ramp_s": 0, "expires_at": 1600, "reason": "noise"}
    assert sim.command("g", cmd(cmd_id="old-1", level=40, lease_epoch=3, **base), 1000.0)
    assert sim.command("g", cmd(cmd_id="new-1", level=60, lease_epoch=4, **base), 1000.0)
    assert sim.command("g", cmd(cmd_id="new-2", level=50, lease_epoch=4, **base), 1000.0)
    assert not sim.command("g", cmd(cmd_id="old-2", level=10, lease_epoch=3, **base), 1000.0)
    assert "lease_epoch 3 is older than epoch 4" in caplog.text
    # once epochs are in use, a command without one cannot be ordered against them
    assert not sim.command("g", cmd(cmd_id="bare", level=10, **base), 1000.0)
    assert "no lease_epoch" in caplog.text
    g = sim.groups["g"]
    assert (g.cmd_id, g.level(1000.0), sim.refused) == ("new-2", 50.0, 2)


@contextlib.asynccontextmanager
async def running_sim(sim: LightsSim, url: str) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(sim.run(url, stop, client_id="sim-under-test"))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_over_mqtt_override_ramps_then_expires(fresh_broker: Mosquitto) -> None:
    # 20x: a 4 s ramp lasts 0.2 s and a 20 s override 1 s of wall time
    clock = ScaledClock(origin=1_700_000_000.0, scale=20.0)
    sim = LightsSim("site-a", ["g1", "g2"], 80.0, clock)
    states: list[dict[str, Any]] = []
    async with (
        aiomqtt.Client("127.0.0.1", fresh_broker.port) as client,
        running_sim(sim, fresh_broker.url),
    ):
        await client.subscribe("hushlight/v1/site-a/lights/g1/state", qos=1)

        async def next_state() -> dict[str, Any]:
            async for m in client.messages:
                assert isinstance(m.payload, bytes)
                assert m.qos == 1
                return dict(json.loads(m.payload))
            raise AssertionError("no message")

        first = await asyncio.wait_for(next_state(), 5)  # retained programme state
        assert first["source"] == "programme" and first["level"] == 80.0
        expires = int(clock.now()) + 20
        await client.publish(
            "hushlight/v1/site-a/lights/g1/set",
            cmd(cmd_id="n-1", level=30, ramp_s=4, expires_at=expires, zone="z", reason="t"),
            qos=1,
        )
        while True:
            s = await asyncio.wait_for(next_state(), 5)
            states.append(s)
            if s["source"] == "programme" and s["level"] == 80.0:
                break
        at_expiry = clock.now()
    overrides = [s for s in states if s["source"] == "override"]
    assert overrides and all(s["cmd_id"] == "n-1" for s in overrides)
    assert min(s["level"] for s in overrides) == 30.0  # reached the target
    assert any(30 < s["level"] < 80 for s in overrides)  # and was seen ramping
    # it went back to the programme by itself, not before the expiry
    back = next(s for s in states if s["source"] == "programme")
    assert back["at"] >= expires
    assert at_expiry >= expires


def test_cli_refuses_bad_arguments_in_one_line() -> None:
    for extra, word in [
        (["--groups", "Bad_Group"], "--groups"),
        (["--groups", "g1", "--programme-level", "150"], "--programme-level"),
        (["--groups", "g1", "--time-scale", "-2"], "--time-scale"),
    ]:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tools.cli",
                "lights-sim",
                "--broker",
                "mqtt://127.0.0.1:1",
                "--site",
                "s",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and word in lines[0], proc.stderr


def test_the_command_says_it_connected_and_each_override_it_applies_and_ends(
    fresh_broker: Mosquitto, tmp_path: Path
) -> None:
    import paho.mqtt.publish as publish
    import paho.mqtt.subscribe as subscribe

    err = tmp_path / "lights-sim.log"
    with err.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "lights-sim", "--broker", fresh_broker.url,
             "--site", "site-b", "--groups", "g1,g2", "--programme-level", "75"],
            stdout=subprocess.DEVNULL, stderr=out,
        )  # fmt: skip
    try:
        # its retained state says it is up and subscribed
        subscribe.simple("hushlight/v1/site-b/lights/g1/state", port=fresh_broker.port, qos=1)
        set_topic = "hushlight/v1/site-b/lights/g1/set"
        override = cmd(cmd_id="n-7.1", level=35, ramp_s=0, expires_at=int(time.time()) + 2,
                       zone="z9", reason="noise")  # fmt: skip
        publish.single(set_topic, override, qos=1, port=fresh_broker.port)
        deadline = time.monotonic() + 10
        while "expired" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        release = cmd(cmd_id="n-7.2", level=None, ramp_s=3, expires_at=0, reason="quiet")
        publish.single(set_topic, release, qos=1, port=fresh_broker.port)
        while "release" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    lines = err.read_text().splitlines()

    def line(words: str) -> str:
        found = [x for x in lines if words in x]
        assert len(found) == 1, f"{words!r} in {lines}"
        return found[0]

    connected = line("connected to")
    assert fresh_broker.url in connected and "hushlight/v1/site-b/lights/+/set" in connected
    assert "g1, g2" in connected and "programme 75 %" in connected
    applied = line("override n-7.1, 35 % over 0 s until ")
    assert "(noise, zone z9)" in applied
    # the expiry in ISO 8601 with the offset, not epoch seconds
    assert re.search(r"until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d ", applied), applied
    line("override n-7.1 expired, back to programme")
    assert "release n-7.2, back to programme 75 % over 3 s (quiet)" in line("release n-7.2")
    assert [lines.index(x) for x in (connected, applied)] == sorted(
        lines.index(x) for x in (connected, applied)
    )
