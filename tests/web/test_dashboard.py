"""The operator's dashboard in a real browser, against a real gateway, Mosquitto and SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Page, expect

from gateway.config import load_config
from gateway.dashboard import Dashboard, DashboardPages
from gateway.events import LevelEvent
from gateway.service import Gateway
from gateway.storage import Storage
from tests.gateway.clocks import FixedClock
from tests.gateway.conftest import Sensors, mqtt_client, write_config
from tests.gateway.stored import fold_and_write
from tests.gateway.test_report import store_pilot
from tests.gateway.test_verdict import simulate
from tests.web.conftest import Web
from tools.broker import Mosquitto

WAIT_MS = 10_000
NO_VALUE = "\u2013"  # what the dashboard shows for a level it does not have


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, broker: Mosquitto) -> AsyncIterator[tuple[Gateway, str]]:
    """A running gateway (zone "main": s1-s3, LAeq trigger), and its dashboard's address."""
    gw = Gateway(load_config(write_config(tmp_path, broker.url)), install_signals=False)
    task = asyncio.create_task(gw.run())
    try:
        await asyncio.wait_for(gw.ready.wait(), 10)
        await asyncio.wait_for(gw.http_ready.wait(), 10)
        yield gw, f"http://127.0.0.1:{gw.http.port}"
    finally:
        gw.stop()
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def http_only(gw: Gateway) -> AsyncIterator[str]:
    """Only the HTTP server of a gateway that is not running (its storage, no broker);
    the storage is closed once the server has stopped."""
    serving = asyncio.create_task(gw.http.serve(gw.http_ready))
    try:
        await asyncio.wait_for(gw.http_ready.wait(), 10)
        yield f"http://127.0.0.1:{gw.http.port}"
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        gw.storage.close()


async def street_json(base: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(base + "/api/dashboard/street") as r,
    ):
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body


async def test_the_street_view_shows_a_sensors_levels_live(
    tmp_path: Path, fresh_broker: Mosquitto, browser: Web
) -> None:
    async with gateway(tmp_path, fresh_broker) as (gw, base), mqtt_client(fresh_broker.port) as pub:
        page = await browser.new_page()
        await page.goto(base + "/")  # redirects to the dashboard
        assert page.url == base + "/dashboard/"
        laeq = page.locator("#laeq-main-s1")
        await expect(page.locator("#link")).to_have_text("live", timeout=WAIT_MS)
        await expect(laeq).to_have_text(NO_VALUE, timeout=WAIT_MS)  # nothing heard yet

        sensors = Sensors(pub, gw.clock)
        await sensors.status("s1", "online")
        await sensors.send("s1", 55.0)
        # one record: the window's LAeq is its own, shown to 0.1 dB; no reload in between
        await expect(laeq).to_have_text("55.0", timeout=WAIT_MS)
        await sensors.send("s1", 63.0)
        await expect(laeq).not_to_have_text("55.0", timeout=WAIT_MS)
        shown = await laeq.inner_text()
        levels = next(
            s for s in (await street_json(base))["zones"][0]["sensors"] if s["sensor"] == "s1"
        )
        assert shown == f"{levels['laeq']:.1f}", (shown, levels)
        assert 55.0 < float(shown) < 63.0  # the energy mean of the two records lies between them
        await expect(page.locator("#lafmax-main-s1")).to_have_text(f"{levels['lafmax']:.1f}")
        await expect(page.locator("#zone-main .badge")).to_have_text("quiet")
        await browser.screenshot(page, "dashboard-street")

        # the fleet: what the sensor's status said
        await page.click("nav a[data-view=fleet]")
        row = page.locator("#fleet tr[data-sensor=s1]")
        await expect(row).to_contain_text("online")
        await expect(row).to_contain_text("1.0.0")  # Sensors.status publishes this firmware
        await expect(row).to_contain_text("10 %")  # and a DSP load of 0.1
        await expect(page.locator("#fleet tr[data-sensor=s2]")).to_contain_text("never heard")
        await browser.screenshot(page, "dashboard-fleet")
    assert browser.errors == []


async def test_an_episode_appears_when_the_noise_triggers(
    tmp_path: Path, fresh_broker: Mosquitto, browser: Web
) -> None:
    async with gateway(tmp_path, fresh_broker) as (gw, base), mqtt_client(fresh_broker.port) as pub:
        page = await browser.new_page()
        await page.goto(base + "/dashboard/#night")
        await expect(page.locator("#night-chart svg")).to_be_visible(timeout=WAIT_MS)
        await expect(page.locator("#episodes tbody")).to_contain_text("no episode in this period")
        assert await page.locator("#night-chart rect.episode").count() == 0

        sensors = Sensors(pub, gw.clock)
        await sensors.status("s1", "online")
        threshold = gw.config.zones_by_id["main"].threshold_db
        for _ in range(3):
            await sensors.send("s1", threshold + 10)
            await asyncio.sleep(0.2)
        # the nudge the gateway started, as its JSON says
        for _ in range(50):
            episode = (await street_json(base))["zones"][0]["episode"]
            if episode is not None:
                break
            await asyncio.sleep(0.1)
        assert episode is not None and not episode["control"]
        row = page.locator(f"#episodes tr[data-episode='{episode['id']}']")
        await expect(row).to_contain_text("nudge", timeout=WAIT_MS)
        await expect(row).to_contain_text(episode["kind"])
        await expect(
            page.locator(f"#night-chart rect.episode.nudge[data-episode='{episode['id']}']")
        ).to_have_count(1)
        await expect(page.locator("#night-chart line.threshold")).to_have_count(1)

        await page.click("nav a[data-view=street]")
        badge = page.locator("#zone-main .badge")
        await expect(badge).to_have_text(f"nudge: {episode['kind']} {episode['level']:g} %")
        light = page.locator("#zone-main table").nth(1)
        await expect(light).to_contain_text(f"{episode['level']:g} %")
        await expect(light).to_contain_text("until ")
        await browser.screenshot(page, "dashboard-street-nudge")
        await page.click("nav a[data-view=night]")
        await browser.screenshot(page, "dashboard-night")
    assert browser.errors == []


async def test_the_verdict_page_shows_the_plot(tmp_path: Path, browser: Web) -> None:
    db = tmp_path / "pilot.db"
    pilot = store_pilot(db, simulate(21, nights=20, rate_ratio=0.6, shift_db=-2.0))
    cfg = load_config(write_config(tmp_path, "mqtt://127.0.0.1:1"))
    cfg = dataclasses.replace(
        cfg,
        storage=dataclasses.replace(cfg.storage, path=db),
        http=dataclasses.replace(cfg.http, port=0),
    )
    clock = FixedClock(max(e.at for e in pilot) + 86400.0)
    gw = Gateway(cfg, clock=clock, install_signals=False)
    async with http_only(gw) as base:
        async with (
            aiohttp.ClientSession() as session,
            session.get(base + "/api/dashboard/verdict?days=60") as r,
        ):
            assert r.status == 200
            want = await r.json()
        assert len(want["rows"]) == 1
        row = want["rows"][0]
        page: Page = await browser.new_page()
        await page.goto(base + "/dashboard/#verdict")
        await page.select_option("#verdict-days", "90")
        plot = page.locator("#verdict-effects svg.forest")
        await expect(plot).to_be_visible(timeout=WAIT_MS)
        await expect(plot.locator("circle.estimate")).to_have_count(2)  # peaks and LAeq
        await expect(plot.locator("line.interval")).to_have_count(2)
        await expect(page.locator(".verdict-row pre")).to_contain_text(row["text"][1].strip())
        points = page.locator(".verdict-row svg.scatter").first.locator("circle.point")
        await expect(points).to_have_count(len(row["points"]))
        assert len(row["points"]) == row["analysed"]["nudges"] + row["analysed"]["controls"]
        await browser.screenshot(page, "dashboard-verdict")
    assert browser.errors == []


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/dashboard/night?zone=nowhere", 400),
        ("/api/dashboard/night?zone=main&hours=x", 400),
        ("/api/dashboard/night?zone=main&hours=1000", 400),
        ("/api/dashboard/verdict?days=0", 400),
        ("/dashboard/static/..%2F..%2Fconfig.py", 404),
        ("/dashboard/static/secret.txt", 404),
    ],
)
async def test_bad_dashboard_requests_get_a_sentence(
    tmp_path: Path, path: str, status: int
) -> None:
    cfg = load_config(write_config(tmp_path, "mqtt://127.0.0.1:1"))
    cfg = dataclasses.replace(cfg, http=dataclasses.replace(cfg.http, port=0))
    gw = Gateway(cfg, install_signals=False)
    serving = asyncio.create_task(gw.http.serve(gw.http_ready))
    try:
        await asyncio.wait_for(gw.http_ready.wait(), 10)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{gw.http.port}{path}") as r,
        ):
            body = json.loads(await r.text())
            assert r.status == status, body
            assert isinstance(body["error"], str) and len(body["error"]) > 20
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        gw.storage.close()


@pytest.mark.parametrize(
    ("forwarded_for", "token", "status"),
    [
        ("192.168.1.20", False, 200),  # the site's network
        ("10.0.0.7", False, 200),
        ("fe80::1", False, 200),
        # from elsewhere (public addresses: the documentation ranges count as private)
        ("81.82.83.84", False, 403),
        ("81.82.83.84", True, 200),  # with the operator token
        ("2a02:1800::5", False, 403),
    ],
)
async def test_the_dashboard_is_open_to_the_local_network_only(
    tmp_path: Path, forwarded_for: str, token: bool, status: int
) -> None:
    cfg = load_config(write_config(tmp_path, "mqtt://127.0.0.1:1"))
    cfg = dataclasses.replace(
        cfg, http=dataclasses.replace(cfg.http, port=0, trust_forwarded_for=True)
    )
    gw = Gateway(cfg, install_signals=False)
    serving = asyncio.create_task(gw.http.serve(gw.http_ready))
    headers = {"X-Forwarded-For": forwarded_for}
    if token:
        headers["Authorization"] = f"Bearer {cfg.http.token}"
    try:
        await asyncio.wait_for(gw.http_ready.wait(), 10)
        async with aiohttp.ClientSession() as session:
            for path in ("/dashboard/", "/api/dashboard/street", "/api/dashboard/events"):
                url = f"http://127.0.0.1:{gw.http.port}{path}"
                async with session.get(url, headers=headers) as r:
                    assert r.status == status, (path, await r.text())
                    if status == 403:
                        assert forwarded_for in (await r.json())["error"]
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        gw.storage.close()


async def test_the_night_shows_the_stored_minutes(tmp_path: Path, browser: Web) -> None:
    cfg = load_config(write_config(tmp_path, "mqtt://127.0.0.1:1"))
    cfg = dataclasses.replace(cfg, http=dataclasses.replace(cfg.http, port=0))
    start = 1_795_213_800.0  # a minute boundary
    with Storage(cfg.storage.path, peak_threshold_db=cfg.storage.peak_threshold_db) as db:
        # s1: ten minutes of 1 s records, rising 2 dB a minute with one peak a minute
        records = [
            LevelEvent(
                "s1",
                0,
                start + k,
                start + k + 1,
                50.0 + 2 * (k // 60),
                55.0 + (k % 60 == 7) * 30,
                55.0,
            )
            for k in range(600)
        ]
        fold_and_write(db, records)
        db.flush()
        stored = db.minute_levels(["s1"], start, start + 600)
    assert len(stored) == 10
    gw = Gateway(cfg, clock=FixedClock(start + 660), install_signals=False)
    async with http_only(gw) as base:
        async with (
            aiohttp.ClientSession() as session,
            session.get(base + "/api/dashboard/night?zone=main&hours=1") as r,
        ):
            night = await r.json()
        assert night["series"]["s2"] == []
        assert night["series"]["s1"] == [
            [m.minute, round(m.laeq, 2), round(m.lafmax, 2), m.peaks] for m in stored
        ]
        page = await browser.new_page()
        await page.goto(base + "/dashboard/#night")
        line = page.locator("#night-chart polyline.minutes")
        await expect(line).to_have_count(1, timeout=WAIT_MS)  # s1's; s2 and s3 have no minute
        points = (await line.get_attribute("points") or "").split()
        assert len(points) == len(stored)
        await expect(page.locator("#night-chart circle.lafmax")).to_have_count(len(stored))
        # louder minutes are drawn higher (SVG y grows downwards)
        ys = [float(p.split(",")[1]) for p in points]
        assert ys == sorted(ys, reverse=True)
        await browser.screenshot(page, "dashboard-night-minutes")
    assert browser.errors == []


async def test_live_streams_are_capped_and_end_when_the_server_stops(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, "mqtt://127.0.0.1:1"))
    gw = Gateway(cfg, install_signals=False)
    pages = DashboardPages(
        Dashboard(cfg, gw.clock, gw.ingest, gw.stepper), cfg.http, period_s=0.05, max_streams=1
    )
    app = web.Application()
    app.add_routes(pages.routes())
    app.on_shutdown.append(pages.on_shutdown)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/dashboard/events"
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as first:
            assert first.headers["Content-Type"] == "text/event-stream"
            events = [await first.content.readline() for _ in range(6)]  # two events
            assert events[0] == b"event: street\n" and events[3] == b"event: street\n"
            assert json.loads(events[1].removeprefix(b"data: "))["site"] == cfg.site_id
            async with session.get(url) as second:
                assert second.status == 503
                assert "dashboards are open" in (await second.json())["error"]
            # the open stream does not hold the server's shutdown (aiohttp waits 60 s for it)
            began = asyncio.get_running_loop().time()
            await runner.cleanup()
            assert asyncio.get_running_loop().time() - began < 5.0
            assert pages.streams == 0
    finally:
        await runner.cleanup()
        gw.storage.close()
