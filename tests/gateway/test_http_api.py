"""The HTTP API of a real (not connected) gateway: auth, validation, JSON shapes, metrics text."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import math
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.config import load_config
from gateway.http_api import RateLimit, client_key
from gateway.policy import LevelEvent, Nudge, Override, step
from gateway.service import Gateway
from tests.gateway.conftest import TOKEN, write_config

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def p256dh() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return b64url(
        key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )


def subscription(
    endpoint: str = "https://push.example.net/send/abc", **keys: Any
) -> dict[str, Any]:
    k = {"p256dh": p256dh(), "auth": b64url(os.urandom(16))}
    k.update(keys)
    return {"subscription": {"endpoint": endpoint, "keys": k}, "zones": ["main"]}


class Api:
    def __init__(self, gw: Gateway, session: aiohttp.ClientSession) -> None:
        self.gw = gw
        self.session = session
        self.base = f"http://127.0.0.1:{gw.http.port}"

    async def call(
        self, method: str, path: str, *, auth: bool = False, headers: Any = None, **kw: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        headers = {**(AUTH if auth else {}), **(headers or {})}
        async with self.session.request(method, self.base + path, headers=headers, **kw) as r:
            body: Any = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body, r


async def _api(
    tmp_path: Path, token: str | None = TOKEN, push: bool = True, **http: Any
) -> AsyncIterator[Api]:
    """A gateway's HTTP API; `push`: Web Push on (a VAPID key is configured)."""
    cfg = load_config(write_config(tmp_path, "mqtt://127.0.0.1:1", http_port=1))
    cfg = dataclasses.replace(cfg, http=dataclasses.replace(cfg.http, port=0, token=token, **http))
    if push:
        key = tmp_path / "vapid.pem"  # never read: nothing is pushed here
        cfg = dataclasses.replace(
            cfg, webpush=dataclasses.replace(cfg.webpush, vapid_private_key=key)
        )
    gw = Gateway(cfg, install_signals=False)
    task = asyncio.create_task(gw.http.serve(gw.http_ready))
    await asyncio.wait_for(gw.http_ready.wait(), 10)
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(gw, session)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gw.storage.close()


@pytest_asyncio.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async for a in _api(tmp_path):
        yield a


async def test_health_is_public(api: Api) -> None:
    status, body, _ = await api.call("GET", "/api/health")
    assert status == 200
    assert body["site"] == "testsite" and body["mqtt_connected"] is False
    assert body["status"] == "degraded" and body["sensors_configured"] == 3


@pytest.mark.parametrize("path", ["/api/zones", "/api/decisions", "/metrics"])
async def test_operator_endpoints_need_the_token(api: Api, path: str) -> None:
    status, body, r = await api.call("GET", path)
    assert status == 401 and "Bearer" in r.headers["WWW-Authenticate"]
    assert "Authorization: Bearer" in body["error"]
    async with api.session.get(api.base + path, headers={"Authorization": "Bearer nope"}) as r2:
        assert r2.status == 401
    status, _, _ = await api.call("GET", path, auth=True)
    assert status == 200


async def test_without_a_configured_token_operator_endpoints_are_off(tmp_path: Path) -> None:
    async for api in _api(tmp_path, token=None):
        status, body, _ = await api.call("GET", "/api/zones", auth=True)
        assert status == 403 and "http.token" in body["error"]


async def test_zones_and_decisions(api: Api) -> None:
    status, body, _ = await api.call("GET", "/api/zones", auth=True)
    assert status == 200
    [zone] = body["zones"]
    assert (
        zone["zone"] == "main" and zone["episode"] is None and zone["sensors"] == ["s1", "s2", "s3"]
    )
    for i in range(3):
        nudge = Nudge(
            "main", f"main-{i}", 1000.0 + i, 75.0, "dim", {"en": "x"}, {"s1": 75.0}, ("s1",)
        )
        api.gw.storage.record_decision(nudge, 1000.0 + i)
    status, body, _ = await api.call("GET", "/api/decisions?limit=2", auth=True)
    assert status == 200
    assert [d["nudge_id"] for d in body["decisions"]] == ["main-2", "main-1"]
    for bad in ("0", "abc", "1001", "-3"):
        status, body, _ = await api.call("GET", f"/api/decisions?limit={bad}", auth=True)
        assert status == 400 and bad in body["error"] and "1 to 1000" in body["error"]


async def test_metrics_are_prometheus_text(api: Api) -> None:
    api.gw.metrics.rejects.inc("bad_json", "s1")
    api.gw.metrics.rejects.inc("bad_json", 'we"ird\\')
    status, text, r = await api.call("GET", "/metrics", auth=True)
    assert status == 200 and r.content_type == "text/plain"
    sample = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)+\})? -?[0-9.e+-]+$')
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
    assert 'hushlight_rejects_total{reason="bad_json",sensor="s1"} 1' in text
    assert "hushlight_queue_depth 0" in text


async def test_subscribe_then_unsubscribe(api: Api) -> None:
    body = subscription()
    status, reply, _ = await api.call("POST", "/api/subscriptions", json=body)
    assert status == 201 and reply["zones"] == ["main"]
    [stored] = api.gw.storage.subscriptions_for_zone("main")
    assert stored.endpoint == body["subscription"]["endpoint"]
    assert dict(stored.keys) == body["subscription"]["keys"]
    endpoint = {"endpoint": stored.endpoint}
    status, _, _ = await api.call("DELETE", "/api/subscriptions", json=endpoint)
    assert status == 204
    assert api.gw.storage.subscriptions_for_zone("main") == []
    status, reply, _ = await api.call("DELETE", "/api/subscriptions", json=endpoint)
    assert status == 404 and "no subscription" in reply["error"]


async def test_while_web_push_is_off_a_subscription_is_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    async for api in _api(tmp_path, push=False):
        status, reply, _ = await api.call("POST", "/api/subscriptions", json=subscription())
        assert status == 503, reply
        assert "Web Push is off" in reply["error"] and "vapid_private_key" in reply["error"]
        assert api.gw.storage.subscriptions_for_zone("main") == []
        assert api.gw.metrics.http_refused.get("push_off") == 1


def _mutate(change: str) -> Any:
    body = subscription()
    sub = body["subscription"]
    if change == "http":
        sub["endpoint"] = "http://push.example.net/x"
    elif change == "ftp":
        sub["endpoint"] = "ftp://127.0.0.1/x"
    elif change == "not_on_curve":
        sub["keys"]["p256dh"] = b64url(b"\x04" + b"\x01" * 64)
    elif change == "compressed":
        sub["keys"]["p256dh"] = b64url(b"\x02" + b"\x01" * 32)
    elif change == "auth":
        sub["keys"]["auth"] = b64url(os.urandom(8))
    elif change == "zone":
        body["zones"] = ["nowhere"]
    elif change == "no_zones":
        body["zones"] = []
    elif change == "no_keys":
        del sub["keys"]
    elif change == "list":
        return [body]
    return body


@pytest.mark.parametrize(
    ("change", "word"),
    [
        ("http", "https://"),
        ("ftp", "https://"),
        ("not_on_curve", "P-256"),
        ("compressed", "P-256"),
        ("auth", "16-byte"),
        ("zone", "nowhere"),
        ("no_zones", "zones"),
        ("no_keys", "keys"),
        ("list", "JSON object"),
    ],
)
async def test_bad_subscriptions_are_refused_with_a_sentence(
    api: Api, change: str, word: str
) -> None:
    status, reply, _ = await api.call("POST", "/api/subscriptions", json=_mutate(change))
    assert status == 400 and word in reply["error"]
    assert api.gw.storage.subscriptions_for_zone("main") == []


async def test_loopback_http_endpoint_is_allowed_for_local_tests(api: Api) -> None:
    status, _, _ = await api.call(
        "POST", "/api/subscriptions", json=subscription("http://127.0.0.1:9/push")
    )
    assert status == 201


@pytest.mark.parametrize(
    ("data", "status", "word"),
    [
        (b"{not json", 400, "JSON"),
        (b'{"subscription": NaN}', 400, "JSON"),
        (b"\xff\xfe", 400, "JSON"),
        (b'{"x": "' + b"a" * 20000 + b'"}', 413, "larger"),
    ],
)
async def test_bodies_that_are_not_json_or_too_big(
    api: Api, data: bytes, status: int, word: str
) -> None:
    got, reply, _ = await api.call(
        "POST", "/api/subscriptions", data=data, headers={"Content-Type": "application/json"}
    )
    assert got == status and word in reply["error"]


async def test_one_address_may_add_or_remove_only_so_many_subscriptions_a_minute(
    tmp_path: Path,
) -> None:
    async for api in _api(tmp_path, subscribe_per_minute=3):
        for i in range(3):
            body = subscription(f"https://push.example.net/send/{i}")
            status, _, _ = await api.call("POST", "/api/subscriptions", json=body)
            assert status == 201
        status, reply, r = await api.call("POST", "/api/subscriptions", json=subscription())
        assert status == 429 and "at most 3 a minute" in reply["error"]
        assert 1 <= int(r.headers["Retry-After"]) <= 20  # a token comes back every 20 s
        gone = {"endpoint": "https://push.example.net/send/0"}
        status, _, _ = await api.call("DELETE", "/api/subscriptions", json=gone)
        assert status == 429  # removing counts too: both write to the database
        assert len(api.gw.storage.subscriptions_for_zone("main")) == 3
        assert api.gw.metrics.http_refused.get("rate_limited") == 2


@pytest.mark.parametrize("trusted", [True, False])
async def test_x_forwarded_for_names_the_client_only_behind_a_trusted_proxy(
    tmp_path: Path, trusted: bool
) -> None:
    async def post(api: Api, forwarded: str, n: int) -> int:
        body = subscription(f"https://push.example.net/send/{n}")
        headers = {"X-Forwarded-For": forwarded}
        status, _, _ = await api.call("POST", "/api/subscriptions", json=body, headers=headers)
        return status

    async for api in _api(tmp_path, subscribe_per_minute=1, trust_forwarded_for=trusted):
        assert await post(api, "203.0.113.7", 1) == 201
        # the proxy appends the address it saw; what the client wrote before it is not trusted
        assert await post(api, "203.0.113.7, 198.51.100.2", 2) == (201 if trusted else 429)
        assert await post(api, "198.51.100.9, 203.0.113.7", 3) == 429


async def test_the_number_of_stored_subscriptions_is_capped(tmp_path: Path) -> None:
    async for api in _api(tmp_path, max_subscriptions=2):
        first, second = (
            subscription("https://push.example.net/1"),
            subscription("https://push.example.net/2"),
        )
        for body in (first, second):
            status, _, _ = await api.call("POST", "/api/subscriptions", json=body)
            assert status == 201
        status, reply, r = await api.call(
            "POST", "/api/subscriptions", json=subscription("https://push.example.net/3")
        )
        assert status == 503 and "try again later" in reply["error"]
        assert int(r.headers["Retry-After"]) > 0
        assert api.gw.storage.subscription("https://push.example.net/3") is None
        assert api.gw.metrics.http_refused.get("subscriptions_full") == 1
        # a phone renewing its own subscription is never refused
        status, _, _ = await api.call("POST", "/api/subscriptions", json=first)
        assert status == 201
        # and a removal makes room
        gone = {"endpoint": "https://push.example.net/2"}
        status, _, _ = await api.call("DELETE", "/api/subscriptions", json=gone)
        assert status == 204
        status, _, _ = await api.call(
            "POST", "/api/subscriptions", json=subscription("https://push.example.net/3")
        )
        assert status == 201


def test_rate_limit_refills_with_time_and_forgets_the_least_recent_clients() -> None:
    now = [0.0]
    limit = RateLimit(6, max_clients=2, clock=lambda: now[0])  # one token every 10 s
    assert [limit.take("a") for _ in range(6)] == [0.0] * 6
    assert limit.take("a") == pytest.approx(10.0)
    now[0] = 5.0
    assert limit.take("a") == pytest.approx(5.0)  # half a token back: 5 s to the next
    now[0] = 10.0
    assert limit.take("a") == 0.0
    assert limit.take("b") == 0.0 and limit.take("c") == 0.0  # "a" is forgotten now
    assert len(limit._buckets) == 2
    assert limit.take("a") == 0.0  # a fresh bucket, full again


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # the same household
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("not an address", "not an address"),
    ],
)
def test_rate_limit_key_of_a_client_address(address: str, key: str) -> None:
    assert client_key(address) == key


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, ZoneInfo("Europe/Brussels")).isoformat(timespec="seconds")


async def test_zones_show_each_sensors_levels_and_times_in_the_sites_zone(api: Api) -> None:
    gw = api.gw
    now = gw.clock.now()
    laeqs = (60.0, 68.0, 65.0)
    for i, laeq in enumerate(laeqs):
        t1 = now - 2 + i
        event = LevelEvent("s1", i, t1 - 1, t1, laeq, laeq + 3, laeq + 5, (), t1)
        gw.state, _ = step(gw.config, gw.state, event, now)
    status, body, _ = await api.call("GET", "/api/zones", auth=True)
    assert status == 200
    [zone] = body["zones"]
    assert zone["now_iso"] == _iso(zone["now"])
    assert zone["trigger"] == {
        "kind": "laeq",
        "threshold_db": 70.0,
        "window_s": 3,
        "min_sensors": 1,
    }
    s1 = zone["levels"]["s1"]
    mean = 10 * math.log10(sum(10 ** (x / 10) for x in laeqs) / len(laeqs))
    assert s1["laeq"] == pytest.approx(mean, abs=0.01)
    assert s1["lafmax"] == max(laeqs) + 3 and s1["peaks"] == 1  # 71 >= 70
    assert s1["live"] and s1["last_seen_iso"] == _iso(s1["last_seen"])
    assert zone["levels"]["s2"] == {**zone["levels"]["s2"], "laeq": None, "live": False}
    assert not zone["loud"]
    assert zone["explain"].startswith(
        "zone main: not triggering: the trigger needs LAeq over 3 s >= 70 dB(A) at 1 sensor; "
        f"0 of 1 needed now (s1 LAeq {mean:.1f}; s2 never heard; s3 never heard)"
    ), zone["explain"]


async def test_decisions_keep_epoch_seconds_and_add_iso_times(api: Api) -> None:
    at = 1_796_510_896.0
    override = Override("main", "g1", "main-1.1", 40.0, 5.0, at + 600, "noise", {}, at, "main-1")
    api.gw.storage.record_decision(override, at)
    status, body, _ = await api.call("GET", "/api/decisions", auth=True)
    assert status == 200
    [row] = body["decisions"]
    assert row["at"] == at and row["at_iso"] == _iso(at) == "2026-12-05T23:48:16+01:00"
    assert row["expires_at"] == at + 600 and row["expires_at_iso"] == _iso(at + 600)
