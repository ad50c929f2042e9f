"""The resident's page in a real Chromium, against a real gateway's HTTP server.

A push reaches the service worker through the DevTools protocol
(ServiceWorker.deliverPushMessage), as a push service would deliver it.
Subscribing goes through the page's own buttons and the real subscription
API; only the browser's PushManager is stood in for, because Chromium's
push service is Google's (FCM), which a headless browser in an isolated
context cannot reach ("Registration failed - permission denied").
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.async_api import CDPSession, Page

from gateway.config import load_config
from gateway.notify import nudge_payload
from gateway.policy import Nudge
from gateway.service import Gateway
from tests.gateway.conftest import write_config
from tests.web.conftest import Web

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


class Resident:
    """A gateway whose HTTP server serves the residents' pages, Web Push on."""

    def __init__(self, gw: Gateway, vapid: ec.EllipticCurvePrivateKey) -> None:
        self.gw = gw
        self.vapid = vapid
        self.base = f"http://127.0.0.1:{gw.http.port}"
        self.messages = dict(gw.config.zones_by_id["main"].messages)


async def serve(tmp_path: Path, *, push: bool) -> AsyncIterator[Resident]:
    vapid = ec.generate_private_key(ec.SECP256R1())
    key = tmp_path / "vapid.pem"
    key.write_bytes(
        vapid.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    webpush = {"vapid_private_key": str(key)} if push else None
    cfg = load_config(write_config(tmp_path, "mqtt://127.0.0.1:1", webpush=webpush))
    cfg = dataclasses.replace(cfg, http=dataclasses.replace(cfg.http, port=0))
    gw = Gateway(cfg, install_signals=False)
    task = asyncio.create_task(gw.http.serve(gw.http_ready))
    await asyncio.wait_for(gw.http_ready.wait(), 10)
    try:
        yield Resident(gw, vapid)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gw.storage.close()


@pytest.fixture
async def resident(tmp_path: Path) -> AsyncIterator[Resident]:
    async for r in serve(tmp_path, push=True):
        yield r


async def until(what: str, check: Callable[[], Awaitable[Any]], within: float = 20.0) -> Any:
    """`check()`'s first truthy value, polled; fails naming `what` after `within` s."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {within} s (last: {value!r})")
        await asyncio.sleep(0.1)


NOTIFICATIONS = """async () => {
  const reg = await navigator.serviceWorker.getRegistration("/residents/");
  return (await reg.getNotifications()).map((n) => ({title: n.title, body: n.body, tag: n.tag}));
}"""

WORKER_URL = """async () => {
  const reg = await navigator.serviceWorker.getRegistration("/residents/");
  return reg && reg.active ? reg.active.scriptURL : null;
}"""


async def open_page(browser: Web, resident: Resident, locale: str) -> Page:
    page = await browser.new_page(permissions=["notifications"], locale=locale, **PHONE)
    await page.goto(f"{resident.base}/residents/main")
    await page.evaluate("window.hushlight.ready")
    return page


async def test_a_pushed_nudge_shows_its_notification(browser: Web, resident: Resident) -> None:
    page = await open_page(browser, resident, "nl-BE")
    cdp: CDPSession = await page.context.new_cdp_session(page)
    registrations: list[dict[str, Any]] = []
    cdp.on(
        "ServiceWorker.workerRegistrationUpdated",
        lambda e: registrations.extend(e["registrations"]),
    )
    await cdp.send("ServiceWorker.enable")

    # the page chose the zone's language the browser asks for, and told its worker
    assert await page.evaluate("document.documentElement.lang") == "nl"
    worker = await until("the service worker is active", lambda: page.evaluate(WORKER_URL))
    assert worker == f"{resident.base}/residents/sw.js?lang=nl"
    scope = f"{resident.base}/residents/"

    async def reported() -> list[dict[str, Any]]:
        return [r for r in registrations if r["scopeURL"] == scope]

    reg = await until("DevTools reports the registration", reported)
    registration_id = reg[0]["registrationId"]

    async def push(n: int) -> None:
        nudge = Nudge(
            "main", f"main-{n}", 1_750_000_000.0 + n, 76.5, "dim", resident.messages, {}, ("s1",)
        )
        await cdp.send(
            "ServiceWorker.deliverPushMessage",
            {
                "origin": resident.base,
                "registrationId": registration_id,
                "data": nudge_payload(nudge).decode(),
            },
        )

    await push(1)
    shown = await until("a notification", lambda: page.evaluate(NOTIFICATIONS))
    assert shown == [{"title": resident.messages["nl"], "body": "main", "tag": "hushlight-main"}]
    # an open page hears of it too
    await until("the page shows the last message", lambda: page.locator("#last").is_visible())
    assert resident.messages["nl"] in await page.locator("#last").inner_text()
    await browser.screenshot(page, "resident-nl-after-push")

    # another language, chosen on the page, is the language of the next notification
    await page.get_by_role("button", name="en", exact=True).click()
    await until(
        "the worker follows the language",
        lambda: page.evaluate(f"({WORKER_URL})().then((u) => u && u.endsWith('lang=en'))"),
    )
    await push(2)
    english = resident.messages["en"]

    async def replaced() -> list[dict[str, Any]] | None:
        shown: list[dict[str, Any]] = await page.evaluate(NOTIFICATIONS)
        return shown if any(n["title"] == english for n in shown) else None

    shown = await until("the English notification", replaced)
    # one per street: the newer nudge replaced the older
    assert [n["title"] for n in shown] == [english]
    await browser.screenshot(page, "resident-en")
    assert browser.errors == []


# The browser's PushManager as a push service would make it work: a subscription
# with a real P-256 key and auth secret; what the page asked for is kept.
FAKE_PUSH = """
(() => {
  const sub = {
    endpoint: %(endpoint)s,
    options: null,
    toJSON() { return {endpoint: this.endpoint, expirationTime: null, keys: %(keys)s}; },
    async unsubscribe() {
      window.__push.unsubscribed += 1;
      window.__push.current = null;
      return true;
    },
  };
  window.__push = {current: null, asked: null, unsubscribed: 0};
  PushManager.prototype.getSubscription = async function () { return window.__push.current; };
  PushManager.prototype.subscribe = async function (options) {
    window.__push.asked = {
      userVisibleOnly: options.userVisibleOnly,
      key: Array.from(new Uint8Array(options.applicationServerKey)),
    };
    sub.options = {applicationServerKey: options.applicationServerKey.buffer};
    window.__push.current = sub;
    return sub;
  };
})();
"""


async def test_subscribing_through_the_page_reaches_the_api(
    browser: Web, resident: Resident
) -> None:
    endpoint = f"https://push.example.net/send/{b64url(os.urandom(12))}"
    keys = {
        "p256dh": b64url(public_point(ec.generate_private_key(ec.SECP256R1()))),
        "auth": b64url(os.urandom(16)),
    }
    page = await browser.new_page(permissions=["notifications"], locale="en-GB", **PHONE)
    await page.add_init_script(
        FAKE_PUSH % {"endpoint": json.dumps(endpoint), "keys": json.dumps(keys)}
    )
    await page.goto(f"{resident.base}/residents/main")
    await page.evaluate("window.hushlight.ready")
    store = resident.gw.storage
    assert store.subscriptions_for_zone("main") == []

    await page.locator("#subscribe").click()
    await page.locator("#unsubscribe").wait_for(state="visible", timeout=10_000)
    [stored] = store.subscriptions_for_zone("main")
    assert stored.endpoint == endpoint and dict(stored.keys) == keys
    assert stored.zones == ("main",)
    asked = await page.evaluate("window.__push.asked")
    # the page subscribed with the key the gateway signs with, for visible notifications only
    assert bytes(asked["key"]) == public_point(resident.vapid) and asked["userVisibleOnly"]
    await browser.screenshot(page, "resident-en-subscribed")

    await page.locator("#unsubscribe").click()
    await page.locator("#subscribe").wait_for(state="visible", timeout=10_000)
    assert store.subscriptions_for_zone("main") == []
    assert await page.evaluate("window.__push.unsubscribed") == 1

    # The push service renews the subscription: the worker tells the gateway.
    await page.locator("#subscribe").click()
    await page.locator("#unsubscribe").wait_for(state="visible", timeout=10_000)
    [worker] = [w for w in page.context.service_workers if "/residents/sw.js" in w.url]
    fresh = f"https://push.example.net/send/{b64url(os.urandom(12))}"
    answer = await worker.evaluate(RENEW, {"old": endpoint, "fresh": fresh, "keys": keys})
    assert answer["result"] == "HTTP 201"
    assert bytes(answer["key"]) == public_point(resident.vapid)
    [renewed] = store.subscriptions_for_zone("main")
    assert renewed.endpoint == fresh and dict(renewed.keys) == keys and renewed.zones == ("main",)
    assert browser.errors == []


# In the worker: its PushManager stood in for as in the page, then the renewal
# run as the pushsubscriptionchange event would (the tests cannot fire that event).
RENEW = """async ({old, fresh, keys}) => {
  let key = null;
  PushManager.prototype.subscribe = async function (options) {
    key = Array.from(new Uint8Array(options.applicationServerKey));
    return {endpoint: fresh, toJSON() { return {endpoint: fresh, expirationTime: null, keys}; }};
  };
  const result = await self.renew({oldSubscription: {endpoint: old}, newSubscription: null});
  return {result, key};
}"""


async def test_while_push_is_off_the_page_says_so_and_offers_nothing(
    browser: Web, tmp_path: Path
) -> None:
    async for resident in serve(tmp_path, push=False):
        page = await open_page(browser, resident, "en-GB")
        status = await page.locator("#status").inner_text()
        subscribe = page.locator("#subscribe")
        assert await subscribe.is_disabled()
        # the figures are still there: a resident can read what would be sent
        assert resident.messages["en"] in await page.locator("#message").inner_text()
        await subscribe.click(force=True)  # a disabled button does nothing
        assert await page.locator("#status").inner_text() == status
        assert resident.gw.storage.subscriptions_for_zone("main") == []
        await browser.screenshot(page, "resident-en-push-off")
    assert browser.errors == []
