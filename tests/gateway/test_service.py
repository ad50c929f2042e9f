"""End-to-end: real Mosquitto, the gateway, the simulated lights, simulated sensors."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import aiomqtt
import pytest

from gateway.clock import ScaledClock
from gateway.collector import NEVER
from gateway.config import load_config
from gateway.policy import Override, Release, explain, initial_state
from gateway.service import SWITCH_INTERVAL_S, Gateway
from gateway.storage import Storage
from protocol import payloads, topics
from tests.firmware.conftest import make_ca
from tests.gateway.conftest import SITE, Sensors, collect, mqtt_client, wait_for, write_config
from tools.broker import Mosquitto, free_port
from tools.lights_sim import LightsSim
from tools.provision import hash_password

SCALE = 10.0  # site seconds per wall second: a 10 s hold lasts 1 s
ROOT = f"hushlight/v1/{SITE}"


@contextlib.asynccontextmanager
async def running(task_coro: Any, stop: Any) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.create_task(task_coro)
    try:
        yield task
    finally:
        stop()
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def site(
    tmp_path: Path, broker: Mosquitto, clock: ScaledClock, **config: Any
) -> AsyncIterator[tuple[Gateway, list[tuple[str, dict[str, Any]]]]]:
    """Gateway + lights-sim in this loop, and every message on the site's topics."""
    cfg = load_config(write_config(tmp_path, broker.url, **config))
    gw = Gateway(cfg, clock=clock, install_signals=False)
    sim = LightsSim(SITE, ["g1"], 80.0, clock)
    sim_stop = asyncio.Event()
    seen: list[tuple[str, dict[str, Any]]] = []
    async with (
        mqtt_client(broker.port) as watcher,
        running(sim.run(broker.url, sim_stop, client_id="sim"), sim_stop.set),
        running(gw.run(), gw.stop),
    ):
        await watcher.subscribe(f"{ROOT}/lights/+/#", qos=1)
        await watcher.subscribe(f"{ROOT}/zones/+/nudge", qos=1)
        watch = asyncio.create_task(collect(watcher, seen))
        await asyncio.wait_for(gw.ready.wait(), 10)
        try:
            yield gw, seen
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch


def of(seen: list[tuple[str, dict[str, Any]]], leaf: str) -> list[dict[str, Any]]:
    return [p for t, p in seen if t.endswith("/" + leaf)]


async def test_loud_then_quiet_overrides_nudges_and_releases(
    tmp_path: Path, fresh_broker: Mosquitto
) -> None:
    clock = ScaledClock(origin=1_750_000_000.0, scale=SCALE)
    async with (
        site(tmp_path, fresh_broker, clock) as (gw, seen),
        mqtt_client(fresh_broker.port) as pub,
    ):
        sensors = Sensors(pub, clock)
        # quiet street: nothing happens
        for _ in range(3):
            await sensors.send("s1", 50.0)
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)
        assert of(seen, "set") == [] and of(seen, "nudge") == []

        await sensors.send("s1", 85.0)
        await wait_for(lambda: of(seen, "set") and of(seen, "nudge"), 2.0, "override and nudge")
        override = of(seen, "set")[0]
        nudge = of(seen, "nudge")[0]
        now = clock.now()
        # the override carries an expiry no later than hold_s ahead
        assert override["level"] == 40 and override["zone"] == "main"
        assert now < override["expires_at"] <= now + 10 + 1
        assert nudge["zone"] == "main" and nudge["message"]["en"] == "People are sleeping here."
        # energy mean of the window: one 85 dB second among the quiet ones
        assert nudge["laeq"] >= 70.0

        # the lights applied it and said so; the gateway saw the acknowledgement
        await wait_for(
            lambda: any(s["source"] == "override" and s["level"] == 40 for s in of(seen, "state")),
            3.0,
            "lights at the nudge level",
        )
        await wait_for(lambda: gw.metrics.overrides_acked.total() >= 1, 2.0, "ack counted")
        # what an operator sees on /api/zones: the episode, its override, acknowledged
        [zone] = gw.zones()
        [sent] = zone["episode"]["overrides"]
        assert zone["episode"]["id"] == nudge["nudge_id"] and zone["live_sensors"] == ["s1"]
        assert sent["cmd_id"] == override["cmd_id"] and sent["acked"] is True

        # quiet again: released after the hold (10 site s = 1 wall s), not before
        t_quiet = clock.now()
        while not [s for s in of(seen, "set") if s["level"] is None]:
            await sensors.send("s1", 45.0)
            await asyncio.sleep(0.1)
            assert clock.now() - t_quiet < 40, "no release within 4x the hold"
        release = next(s for s in of(seen, "set") if s["level"] is None)
        assert release["reason"] == "quiet"
        assert clock.now() - t_quiet >= 10 - 3  # the hold counts from the last loud window
        await wait_for(
            lambda: of(seen, "state")[-1]["source"] == "programme", 3.0, "lights back to programme"
        )
        assert len(of(seen, "nudge")) == 1
        decisions = gw.storage.recent_decisions(50)
        kinds = [d["type"] for d in decisions]
        assert "Nudge" in kinds and "Override" in kinds and "Release" in kinds
        # the sensor's own minute summary goes to storage as it is
        t1 = int(clock.now() * 1000)
        await pub.publish(
            topics.summary(SITE, "s2"),
            payloads.encode_summary(
                seq=9,
                t0=t1 - 60_000,
                t1=t1,
                laeq=55.0,
                lafmax=71.0,
                lamin=40.0,
                l10=60.0,
                l50=52.0,
                l90=44.0,
                lceq=62.0,
                peaks=1,
            ),
            qos=1,
        )
        await wait_for(lambda: gw.metrics.records_in.get("summary") == 1, 2.0, "the summary")
    # stopped: everything it received is in the database
    with sqlite3.connect(tmp_path / "gw.db") as db:
        assert db.execute("SELECT sensor, seq, peaks FROM summaries").fetchall() == [("s2", 9, 1)]
        counted = db.execute("SELECT sum(n) FROM levels_minute WHERE sensor = 's1'").fetchone()
    assert counted[0] == gw.metrics.records_accepted.get("s1")


async def test_a_stop_while_a_turn_waits_for_the_lights_loses_no_record(
    tmp_path: Path, fresh_broker: Mosquitto
) -> None:
    """Every record the broker handed over is stored, stop or no stop: a turn of the
    ingest that waits for a slow lighting adapter finishes before the gateway ends."""

    class SlowLights:
        async def apply(self, override: Override) -> None:
            await asyncio.sleep(0.5)

        async def release(self, release: Release) -> None:
            await asyncio.sleep(0.5)

    clock = ScaledClock(origin=1_750_000_000.0, scale=1.0)
    cfg = load_config(write_config(tmp_path, fresh_broker.url))
    gw = Gateway(cfg, clock=clock, lighting=SlowLights(), install_signals=False)
    async with running(gw.run(), gw.stop), mqtt_client(fresh_broker.port) as pub:
        await asyncio.wait_for(gw.ready.wait(), 10)
        sensors = Sensors(pub, clock)
        # back to back, so that they come in one read and one turn of the ingest: the
        # loud record in the middle makes an override, and the turn waits in apply()
        # with the records after it still to handle
        levels = [50.0] * 100 + [90.0] + [50.0] * 100
        await asyncio.gather(
            *(sensors.send("s1" if db > 60 else f"s{2 + i % 2}", db) for i, db in enumerate(levels))
        )
        sent = len(levels)
        await wait_for(lambda: gw.metrics.decisions.total() >= 1, 5.0, "the override")
        gw.stop()
    # what the broker still holds for the gateway's session comes on the next start
    gw2 = Gateway(cfg, clock=clock, install_signals=False)
    async with running(gw2.run(), gw2.stop):

        def stored() -> int:
            with sqlite3.connect(tmp_path / "gw.db") as db:
                n = db.execute("SELECT sum(n) FROM levels_minute").fetchone()[0] or 0
            return int(n) + int(gw2.metrics.records_accepted.total())

        await wait_for(lambda: stored() >= sent, 10.0, f"all {sent} records")
    with sqlite3.connect(tmp_path / "gw.db") as db:
        assert db.execute("SELECT sum(n) FROM levels_minute").fetchone()[0] == sent


async def test_a_stop_as_the_link_subscribes_still_stops_the_gateway(
    tmp_path: Path, fresh_broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Python 3.11, aiomqtt's `asyncio.wait_for` drops a cancellation that comes as the
    SUBACK does; the gateway stopped in that moment must stop all the same."""
    cfg = load_config(write_config(tmp_path, fresh_broker.url))
    gw = Gateway(cfg, clock=ScaledClock(origin=1_750_000_000.0, scale=1.0), install_signals=False)
    subscribe = aiomqtt.Client.subscribe

    async def subscribe_and_swallow(self: aiomqtt.Client, *args: Any, **kw: Any) -> Any:
        result = await subscribe(self, *args, **kw)
        gw.stop()  # the link is cancelled while it is still in here ...
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(2)
        return result  # ... and the cancellation is lost, as wait_for loses it

    monkeypatch.setattr(aiomqtt.Client, "subscribe", subscribe_and_swallow)
    await asyncio.wait_for(gw.run(), 10)
    assert not gw.link.connected.is_set()


# ---------------------------------------------------------------- the gateway as a process


class GatewayProcess:
    """`hushlight gateway` in a child process on a shared scaled timeline."""

    def __init__(self, config: Path, port: int, origin: float, start: float, log: Path) -> None:
        self.args = [
            sys.executable, "-m", "tools.cli", "gateway", "--config", str(config),
            "--time-scale", str(SCALE), "--time-origin", repr(origin), "--time-start", repr(start),
        ]  # fmt: skip
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        return self.proc

    async def start(self) -> None:
        proc = self.spawn()
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                assert proc.poll() is None, self.log.read_text()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{self.port}/api/health") as r:
                        if (await r.json())["mqtt_connected"]:
                            return
                await asyncio.sleep(0.05)
        raise AssertionError("the gateway did not come up:\n" + self.log.read_text())

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(15)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextlib.asynccontextmanager
async def street(
    tmp_path: Path, broker: Mosquitto, **zone: Any
) -> AsyncIterator[tuple[GatewayProcess, ScaledClock, Sensors, list[tuple[str, dict[str, Any]]]]]:
    """A gateway process, the lights (in this loop, on the same timeline) and a watcher."""
    port = free_port()
    config = write_config(tmp_path, broker.url, zone=zone, http_port=port)
    start = time.time()
    origin = start
    clock = ScaledClock(origin, SCALE, m0=time.monotonic() - (time.time() - start))
    gw = GatewayProcess(config, port, origin, start, tmp_path / "gateway.log")
    sim = LightsSim(SITE, ["g1"], 80.0, clock)
    sim_stop = asyncio.Event()
    seen: list[tuple[str, dict[str, Any]]] = []
    try:
        async with (
            mqtt_client(broker.port) as watcher,
            mqtt_client(broker.port) as pub,
            running(sim.run(broker.url, sim_stop, client_id="sim"), sim_stop.set),
        ):
            await watcher.subscribe(f"{ROOT}/lights/+/#", qos=1)
            await watcher.subscribe(f"{ROOT}/zones/+/nudge", qos=1)
            watch = asyncio.create_task(collect(watcher, seen))
            await gw.start()
            try:
                yield gw, clock, Sensors(pub, clock), seen
            finally:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
    finally:
        gw.close()


async def test_killed_gateway_lights_fall_back_at_expiry_and_restart_does_not_renudge(
    tmp_path: Path, fresh_broker: Mosquitto
) -> None:
    async with street(tmp_path, fresh_broker, hold_s=20, renew_before_s=5) as (
        gw,
        clock,
        sensors,
        seen,
    ):
        await sensors.send("s1", 88.0)
        await wait_for(lambda: of(seen, "set") and of(seen, "nudge"), 2.0, "override and nudge")
        override = of(seen, "set")[0]
        await wait_for(
            lambda: any(s["source"] == "override" for s in of(seen, "state")), 3.0, "lights dimmed"
        )
        assert gw.signal(signal.SIGKILL) == -signal.SIGKILL
        killed_at = clock.now()
        assert killed_at < override["expires_at"]  # killed mid-nudge

        # nobody tells the lights anything: they go back at the expiry by themselves
        await wait_for(
            lambda: of(seen, "state")[-1]["source"] == "programme",
            (override["expires_at"] - killed_at) / SCALE + 3.0,
            "lights back to programme",
        )
        back = of(seen, "state")[-1]
        assert back["at"] >= override["expires_at"] and back["cmd_id"] == override["cmd_id"]
        assert [s for s in of(seen, "set") if s["level"] is None] == []

        # restart: the state comes back, the stale override is released, no second nudge
        await gw.start()
        await wait_for(
            lambda: [s for s in of(seen, "set") if s["level"] is None], 5.0, "release after restart"
        )
        release = next(s for s in of(seen, "set") if s["level"] is None)
        assert release["zone"] == "main" and release["cmd_id"].startswith(override["cmd_id"][:-2])
        for _ in range(10):
            await sensors.send("s1", 88.0)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert len(of(seen, "nudge")) == 1
        assert len([s for s in of(seen, "set") if s["level"] is not None]) == 1


async def test_graceful_restart_resumes_the_nudge_without_repeating_it(
    tmp_path: Path, fresh_broker: Mosquitto
) -> None:
    async with street(tmp_path, fresh_broker, hold_s=60, renew_before_s=30) as (
        gw,
        clock,
        sensors,
        seen,
    ):
        await sensors.send("s1", 88.0)
        await wait_for(lambda: of(seen, "nudge"), 2.0, "nudge")
        first = of(seen, "set")[0]
        assert gw.signal(signal.SIGTERM) == 0
        # leave-with-expiry: nothing released, the lights keep the override and its expiry
        assert [s for s in of(seen, "set") if s["level"] is None] == []
        await gw.start()
        # the noise goes on across the restart: the hold is renewed, not a new nudge
        while not [s for s in of(seen, "set") if s["reason"] == "renew"]:
            await sensors.send("s1", 88.0)
            await asyncio.sleep(0.1)
            assert clock.now() < first["expires_at"], "no renewal before the override expired"
        renew = next(s for s in of(seen, "set") if s["reason"] == "renew")
        episode = first["cmd_id"].rsplit(".", 1)[0]
        assert renew["cmd_id"].startswith(episode + ".")
        assert renew["expires_at"] > first["expires_at"]
        assert len(of(seen, "nudge")) == 1


async def test_broker_restart_reconnects_and_the_session_keeps_what_came_meanwhile(
    tmp_path: Path, fresh_broker: Mosquitto
) -> None:
    clock = ScaledClock(origin=1_750_000_000.0, scale=1.0)
    cfg = load_config(write_config(tmp_path, fresh_broker.url))
    gw = Gateway(cfg, clock=clock, install_signals=False)
    thresholds = gc.get_threshold()
    switch = sys.getswitchinterval()
    assert switch != pytest.approx(SWITCH_INTERVAL_S)
    async with running(gw.run(), gw.stop):
        await asyncio.wait_for(gw.ready.wait(), 10)
        assert gc.get_threshold()[1:] == (NEVER, NEVER) and gc.get_freeze_count() > 0
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
        async with mqtt_client(fresh_broker.port) as pub:
            await Sensors(pub, clock).send("s2", 50.0)
        await wait_for(lambda: gw.metrics.records_accepted.get("s2") == 1, 5.0, "first record")

        # persistence on: the gateway's session survives the restart
        await asyncio.to_thread(fresh_broker.restart)
        await wait_for(lambda: gw.metrics.reconnects.total() >= 1, 10.0, "the lost connection")
        await wait_for(lambda: gw.connected.is_set(), 10.0, "reconnection")
        async with mqtt_client(fresh_broker.port) as pub:
            await Sensors(pub, clock).send("s3", 50.0)
        await wait_for(lambda: gw.metrics.records_accepted.get("s3") == 1, 5.0, "record after")

    # the gateway is down: its persistent session keeps QoS 1 records for it
    async with mqtt_client(fresh_broker.port) as pub:
        sensors = Sensors(pub, clock)
        for _ in range(5):
            await sensors.send("s1", 50.0, t1=clock.now() - 60)  # from a sensor's backlog
    gw2 = Gateway(cfg, clock=clock, install_signals=False)
    async with running(gw2.run(), gw2.stop):
        await wait_for(lambda: gw2.metrics.records_accepted.get("s1") == 5, 10.0, "queued records")
        assert gw2.metrics.late.get("s1") == 5  # stored, but too old to trigger anything
    # the collector's and the GIL's settings are the process's: a stopped gateway puts them back
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == 0
    assert sys.getswitchinterval() == switch


async def test_sigterm_with_release_hands_the_lights_back(
    tmp_path: Path, fresh_broker: Mosquitto
) -> None:
    clock = ScaledClock(origin=1_750_000_000.0, scale=SCALE)
    cfg = load_config(write_config(tmp_path, fresh_broker.url, zone={"hold_s": 60}))
    gw = Gateway(cfg, clock=clock, install_signals=False, on_stop="release")
    seen: list[tuple[str, dict[str, Any]]] = []
    async with mqtt_client(fresh_broker.port) as watcher, mqtt_client(fresh_broker.port) as pub:
        await watcher.subscribe(f"{ROOT}/lights/+/set", qos=1)
        watch = asyncio.create_task(collect(watcher, seen))
        task = asyncio.create_task(gw.run())
        await asyncio.wait_for(gw.ready.wait(), 10)
        await Sensors(pub, clock).send("s1", 90.0)
        await wait_for(lambda: of(seen, "set"), 2.0, "override")
        gw.stop()
        await asyncio.wait_for(task, 10)
        await wait_for(lambda: len(of(seen, "set")) == 2, 2.0, "release on stop")
        watch.cancel()
    override, release = of(seen, "set")
    assert release["level"] is None and release["reason"] == "shutdown"
    # numbered as the next command of its episode, like any other release
    episode, number = override["cmd_id"].rsplit(".", 1)
    assert release["cmd_id"] == f"{episode}.{int(number) + 1}"
    with Storage(cfg.storage.path) as db:
        [episode] = db.episodes()
        assert episode.end_reason == "shutdown" and episode.ended_at is not None
    with sqlite3.connect(cfg.storage.path) as db:
        ids = [row[0] for row in db.execute("SELECT cmd_id FROM commands ORDER BY sent_at")]
    assert ids == [override["cmd_id"], release["cmd_id"]]


def test_cli_config_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "site.toml"
    bad.write_text('[site]\nid = "Bad Id"\n')
    busy = socket.create_server(("127.0.0.1", 0))  # somebody else has the HTTP port
    port = busy.getsockname()[1]
    (tmp_path / "taken").mkdir()
    taken = write_config(tmp_path / "taken", "mqtt://127.0.0.1:1", http_port=port)
    for args, word in (
        (["--config", str(tmp_path / "missing.toml")], "missing.toml"),
        (["--config", str(bad)], "Bad Id"),
        (["--config", str(taken), "--time-origin", "5"], "--time-scale"),
        (["--config", str(taken)], f"127.0.0.1:{port}"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "tools.cli", "gateway", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("hushlight gateway: error:") and word in lines[-1], lines
        # nothing but the log lines of a gateway that had started, and the one error
        assert all(" INFO " in line or " WARNING " in line for line in lines[:-1]), lines
    busy.close()


class BrokenLights:
    """A lighting adapter whose controller is unreachable."""

    def __init__(self) -> None:
        self.calls = 0

    async def apply(self, override: Override) -> None:
        self.calls += 1
        raise ConnectionError("controller unreachable")

    async def release(self, release: Release) -> None:
        self.calls += 1
        raise ConnectionError("controller unreachable")


async def test_a_failing_lighting_adapter_does_not_stop_the_nudge_or_the_gateway(
    tmp_path: Path, fresh_broker: Mosquitto
) -> None:
    clock = ScaledClock(origin=1_750_000_000.0, scale=SCALE)
    cfg = load_config(write_config(tmp_path, fresh_broker.url))
    lights = BrokenLights()
    gw = Gateway(cfg, clock=clock, install_signals=False, lighting=lights)
    seen: list[tuple[str, dict[str, Any]]] = []
    async with (
        mqtt_client(fresh_broker.port) as watcher,
        mqtt_client(fresh_broker.port) as pub,
        running(gw.run(), gw.stop) as task,
    ):
        await watcher.subscribe(f"{ROOT}/zones/+/nudge", qos=1)
        watch = asyncio.create_task(collect(watcher, seen))
        await asyncio.wait_for(gw.ready.wait(), 10)
        sensors = Sensors(pub, clock)
        await sensors.send("s1", 90.0)
        await wait_for(lambda: of(seen, "nudge"), 2.0, "nudge")
        assert lights.calls == 1 and gw.metrics.worker_errors.get("ConnectionError") == 1
        # still at work: the release after the hold reaches the adapter too
        while lights.calls < 2:
            await sensors.send("s1", 40.0)
            await asyncio.sleep(0.1)
            assert clock.now() < 1_750_000_000.0 + 200, "no release attempt"
        assert not task.done()
        watch.cancel()


async def test_a_trigger_replayed_from_an_older_saved_state_is_not_notified_again(
    tmp_path: Path, fresh_broker: Mosquitto
) -> None:
    clock = ScaledClock(origin=1_750_000_000.0, scale=SCALE)
    cfg = load_config(write_config(tmp_path, fresh_broker.url))
    seen: list[tuple[str, dict[str, Any]]] = []
    async with mqtt_client(fresh_broker.port) as watcher, mqtt_client(fresh_broker.port) as pub:
        await watcher.subscribe(f"{ROOT}/zones/+/nudge", qos=1)
        await watcher.subscribe(f"{ROOT}/lights/+/set", qos=1)
        watch = asyncio.create_task(collect(watcher, seen))
        sensors = Sensors(pub, clock)
        gw = Gateway(cfg, clock=clock, install_signals=False)
        async with running(gw.run(), gw.stop):
            await asyncio.wait_for(gw.ready.wait(), 10)
            await sensors.send("s1", 90.0)
            await wait_for(lambda: of(seen, "nudge"), 2.0, "nudge")
        # as if the gateway had died before saving the state that knows of the nudge
        with Storage(cfg.storage.path) as db:
            db.save_state(initial_state(cfg), clock.now())
        gw2 = Gateway(cfg, clock=clock, install_signals=False)
        async with running(gw2.run(), gw2.stop):
            await asyncio.wait_for(gw2.ready.wait(), 10)
            await sensors.send("s1", 90.0)
            # the same episode comes back: the lights get it again, the residents do not
            await wait_for(lambda: len(of(seen, "set")) >= 3, 2.0, "the override again")
            await asyncio.sleep(0.3)
        watch.cancel()
    first, orphan_release, again = of(seen, "set")[:3]
    # the saved state did not know the override in force: released at start-up
    assert orphan_release["level"] is None and orphan_release["reason"] == "restart"
    assert again["cmd_id"] == first["cmd_id"] and again["level"] == first["level"]
    assert len(of(seen, "nudge")) == 1


@contextlib.contextmanager
def lights_sim_process(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`hushlight lights-sim ARGS` in a process of its own, killed if the test leaves it running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "lights-sim", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def test_lights_sim_command_runs_and_stops_on_sigterm(fresh_broker: Mosquitto) -> None:
    import paho.mqtt.subscribe as subscribe

    with lights_sim_process(
        "--broker", fresh_broker.url, "--site", SITE, "--groups", "g1,g2",
        "--programme-level", "65",
    ) as proc:  # fmt: skip
        # its retained state is there for anybody who subscribes later
        msg = subscribe.simple(
            f"{ROOT}/lights/g2/state", hostname="127.0.0.1", port=fresh_broker.port, qos=1
        )
        assert json.loads(msg.payload) == {
            **json.loads(msg.payload), "level": 65.0, "source": "programme", "cmd_id": None
        }  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_lights_sim_over_tls_with_a_password_file(tmp_path: Path) -> None:
    import paho.mqtt.subscribe as subscribe

    tls = make_ca(tmp_path / "tls", "hushlight test CA")
    passwords = tmp_path / "passwords"
    passwords.write_text(
        f"lights:{hash_password('lights-secret')}\nreader:{hash_password('reader-secret')}\n"
    )
    passwords.chmod(0o600)
    secret = tmp_path / "lights.password"
    secret.write_text("lights-secret\n")
    broker = Mosquitto(tls=(tls.ca, tls.cert, tls.key), password_file=passwords)
    with broker, lights_sim_process(
        "--broker", broker.tls_url, "--ca", str(tls.ca), "--username", "lights",
        "--password-file", str(secret), "--site", SITE, "--groups", "g1",
        "--programme-level", "55",
    ) as proc:  # fmt: skip
        msg = subscribe.simple(
            f"{ROOT}/lights/g1/state",
            hostname="127.0.0.1",
            port=broker.port,
            qos=1,
            auth={"username": "reader", "password": "reader-secret"},
        )
        assert json.loads(msg.payload)["level"] == 55.0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


@pytest.mark.parametrize(
    ("extra", "env", "words"),
    [
        (["--ca", "ca.pem"], {}, "--ca is for mqtts://"),
        (["--password-file", "missing.txt"], {}, "cannot read it"),
        ([], {"HUSHLIGHT_MQTT_PASSWORD": "x"}, "no --username"),
    ],
)
def test_lights_sim_refuses_credentials_that_cannot_work(
    tmp_path: Path, extra: list[str], env: dict[str, str], words: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "lights-sim", "--broker", "mqtt://127.0.0.1:1",
         "--site", SITE, "--groups", "g1", *extra],
        cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and words in done.stderr, done.stderr


async def test_over_tls_with_a_password(tmp_path: Path) -> None:
    tls = make_ca(tmp_path / "tls", "hushlight test CA")
    passwords = tmp_path / "passwords"
    passwords.write_text(
        f"gateway:{hash_password('gateway-secret')}\nsensor:{hash_password('sensor-secret')}\n"
    )
    passwords.chmod(0o600)
    with Mosquitto(tls=(tls.ca, tls.cert, tls.key), password_file=passwords) as broker:
        cfg = load_config(
            write_config(
                tmp_path,
                broker.tls_url,
                broker={"ca": str(tls.ca), "username": "gateway", "password": "gateway-secret"},
            )
        )
        clock = ScaledClock(origin=1_750_000_000.0, scale=1.0)
        gw = Gateway(cfg, clock=clock, install_signals=False)
        async with running(gw.run(), gw.stop):
            await asyncio.wait_for(gw.ready.wait(), 10)
            async with mqtt_client(broker.port, username="sensor", password="sensor-secret") as pub:
                await Sensors(pub, clock).send("s1", 50.0)
            await wait_for(lambda: gw.metrics.records_accepted.get("s1") == 1, 5.0, "the record")

        # a wrong password is refused by the broker: the gateway keeps retrying, never crashes
        wrong = load_config(
            write_config(
                tmp_path,
                broker.tls_url,
                broker={"ca": str(tls.ca), "username": "gateway", "password": "wrong-secret"},
            )
        )
        gw2 = Gateway(wrong, clock=clock, install_signals=False)
        async with running(gw2.run(), gw2.stop) as task:
            await wait_for(lambda: gw2.metrics.reconnects.total() >= 2, 10.0, "retries")
            assert not gw2.connected.is_set() and not task.done()


@pytest.mark.parametrize("push", [False, True])
async def test_the_gateway_says_at_start_whether_web_push_is_on(
    tmp_path: Path, fresh_broker: Mosquitto, caplog: pytest.LogCaptureFixture, push: bool
) -> None:
    caplog.set_level(logging.INFO, "hushlight.gateway")
    webpush = {"vapid_private_key": str(tmp_path / "vapid.pem")} if push else None
    clock = ScaledClock(origin=1_750_000_000.0, scale=SCALE)
    async with site(tmp_path, fresh_broker, clock, webpush=webpush):
        pass
    started = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Web Push")]
    assert len(started) == 1, caplog.text
    if push:
        assert started[0].startswith("Web Push on: VAPID key ") and "vapid.pem" in started[0]
    else:
        assert started[0].startswith("Web Push off: no [webpush] vapid_private_key")
        assert "answers 503" in started[0]


async def test_two_gateways_with_one_client_id_are_told_they_are_taking_over_each_other(
    tmp_path: Path, fresh_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "hushlight.gateway")
    clock = ScaledClock(origin=1_750_000_000.0, scale=SCALE)
    gateways = []
    for name in ("active", "standby"):
        (tmp_path / name).mkdir()
        cfg = load_config(
            write_config(tmp_path / name, fresh_broker.url, client_id="hushlight-gateway-one")
        )
        gateways.append(Gateway(cfg, clock=clock, install_signals=False))
    a, b = gateways
    began = time.monotonic()
    async with running(a.run(), a.stop), running(b.run(), b.stop):
        await wait_for(lambda: "another client" in caplog.text, 15.0, "word of the takeover")
        health = [g.health() for g in gateways]
        assert any(h["mqtt_client_id_contested"] and h["status"] == "degraded" for h in health)
        await asyncio.sleep(max(0.0, began + 5.0 - time.monotonic()))
    [said, *_] = [r for r in caplog.records if "another client" in r.getMessage()]
    assert a.metrics.takeovers.total() + b.metrics.takeovers.total() >= 1
    assert said.levelno == logging.ERROR
    text = said.getMessage()
    assert "'hushlight-gateway-one'" in text and "run one gateway per client id" in text
    # and they do not fight several times a second: the back-off grows while it lasts
    # (it started over at every connection: some 50 connections in these 5 s)
    connects = [r for r in caplog.records if r.getMessage().startswith("connected to ")]
    assert len(connects) < 25, len(connects)


def test_a_second_gateway_on_the_same_database_refuses_to_start(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, "mqtt://127.0.0.1:1"))
    first = Gateway(cfg, install_signals=False)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tools.cli", "gateway", "--config", str(cfg.source)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        first.storage.close()
    assert done.returncode == 2, done.stderr
    assert "is in use by another gateway" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


async def test_the_log_speaks_the_sites_time_and_says_what_triggered(
    tmp_path: Path, fresh_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "hushlight.gateway")
    clock = ScaledClock(origin=1_750_000_000.0, scale=SCALE)
    async with (
        site(tmp_path, fresh_broker, clock) as (_, seen),
        mqtt_client(fresh_broker.port) as pub,
    ):
        await Sensors(pub, clock).send("s1", 85.0)
        await wait_for(lambda: of(seen, "set"), 2.0, "override")
    override = of(seen, "set")[0]
    until = dt.datetime.fromtimestamp(override["expires_at"], ZoneInfo("Europe/Brussels"))
    until_iso = until.isoformat(timespec="seconds")
    lines = [r.getMessage() for r in caplog.records]
    assert f"override {override['cmd_id']}: g1 -> 40% until {until_iso} (noise)" in lines
    [nudge] = [x for x in lines if x.startswith("nudge ")]
    assert nudge.endswith("(dim): LAeq over 3 s >= 70 dB(A): s1 85.0 dB(A)"), nudge


# ---------------------------------------------------------------- the example config


EXAMPLE = Path(__file__).parents[2] / "gateway" / "site.example.toml"


async def test_the_example_config_nudges_within_a_minute_with_the_synthetic_street(
    tmp_path: Path, fresh_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's first run: the example config (by day, its schedule opened to every hour,
    as the README says), one virtual sensor playing the synthetic street."""
    caplog.set_level(logging.INFO, "hushlight.gateway")
    text = EXAMPLE.read_text()
    for old, new in (
        ('url = "mqtt://127.0.0.1:1883"', f'url = "{fresh_broker.url}"'),
        ("port = 8080", f"port = {free_port()}"),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    text = re.sub(r"(?m)^schedule = .*$", 'schedule = ["00:00-24:00"]', text)
    (tmp_path / "site.toml").write_text(text)
    gw = Gateway(load_config(tmp_path / "site.toml"), install_signals=False, explain=True)
    nudges: list[tuple[str, dict[str, Any]]] = []
    async with (
        mqtt_client(fresh_broker.port) as watcher,
        running(gw.run(), gw.stop),
    ):
        await watcher.subscribe("hushlight/v1/leuven/zones/+/nudge", qos=1)
        watch = asyncio.create_task(collect(watcher, nudges))
        await asyncio.wait_for(gw.ready.wait(), 10)
        sensor = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tools.cli", "sensor", "--id", "ns-01", "--site", "leuven",
            "--broker", fresh_broker.url, "--synthetic", "street",
            "--state-dir", str(tmp_path / "ns-01"), "--heap", "256K",
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        began = time.monotonic()
        try:
            await wait_for(lambda: nudges, 60.0, "nudge")
        finally:
            sensor.terminate()
            _, err = await asyncio.wait_for(sensor.communicate(), 15)
            watch.cancel()
        took = time.monotonic() - began
    [(topic, nudge)] = nudges
    assert topic.endswith("/zones/naamsestraat/nudge") and nudge["kind"] == "dim", err
    assert took < 60.0
    # before it, --explain said what the zone waited for, in its own terms
    explained = [r.getMessage() for r in caplog.records if "zone naamsestraat: " in r.getMessage()]
    assert any(
        "the trigger needs LAFmax >= 70 dB(A) 1 time in 10 s at 1 sensor" in x for x in explained
    ), explained
    [said] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("nudge ")]
    assert "LAFmax peaks >= 70 dB(A) in 10 s: ns-01 1" in said, said


def test_explain_says_a_zone_is_outside_its_schedule_and_when_it_opens() -> None:
    cfg = load_config(EXAMPLE)
    tz = ZoneInfo("Europe/Brussels")
    noon = dt.datetime(2026, 12, 7, 12, 0, tzinfo=tz).timestamp()
    text = explain(cfg, initial_state(cfg), "naamsestraat", noon)
    assert text.startswith("zone naamsestraat: not triggering: the trigger needs LAFmax >= 70")
    assert "ns-01 never heard" in text
    assert text.endswith(
        "and outside its schedule (mon-sun 23:00-05:00, Europe/Brussels); "
        "next from 2026-12-07T23:00:00+01:00"
    ), text
