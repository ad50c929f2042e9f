"""End-to-end: real Mosquitto, the gateway, the simulated lights, simulated sensors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gateway.clock import ScaledClock
from gateway.config import load_config
from gateway.lights_sim import LightsSim
from gateway.service import Gateway
from tests.gateway.conftest import SITE, Sensors, collect, mqtt_client, wait_for, write_config
from tools.broker import Mosquitto

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
