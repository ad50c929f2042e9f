"""Nudges on MQTT and by Web Push, checked by a local push service that decrypts what arrives.

The push service here does what a browser vendor's does with a message: it
checks the VAPID JWT (ES256, RFC 8292) against the site's public key, and the
test plays the browser by decrypting the aes128gcm body (RFC 8291) with the
subscription's private key, made here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import http_ece
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from gateway.config import WebPushConfig
from gateway.metrics import Metrics
from gateway.notify import Notifier
from gateway.policy import Nudge
from gateway.storage import Storage
from protocol import payloads
from tests.gateway.clocks import FixedClock
from tests.gateway.stored import delivered

SUBJECT = "mailto:noise@example.org"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.sent.append((topic, payload, qos))


@dataclass
class Phone:
    """A browser's push subscription: the private half stays here."""

    name: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def keys(self) -> dict[str, str]:
        point = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {"p256dh": b64url(point), "auth": b64url(self.auth)}


@dataclass
class Received:
    phone: str
    headers: Mapping[str, str]  # case-insensitive, like HTTP
    body: bytes


class PushService:
    """POST /push/<phone>: answers 201, or the status set for that phone."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status: dict[str, int] = {}
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        phone = request.match_info["phone"]
        self.received.append(Received(phone, request.headers.copy(), await request.read()))
        return web.Response(status=self.status.get(phone, 201))

    def endpoint(self, phone: Phone) -> str:
        return f"http://127.0.0.1:{self.port}/push/{phone.name}"


@pytest_asyncio.fixture
async def push_service() -> AsyncIterator[PushService]:
    svc = PushService()
    app = web.Application()
    app.add_routes([web.post("/push/{phone}", svc.handle)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    svc.port = runner.addresses[0][1]
    yield svc
    await runner.cleanup()


@pytest.fixture
def vapid_key(tmp_path: Path) -> tuple[Path, ec.EllipticCurvePublicKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "vapid.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path, key.public_key()


def make_nudge(zone: str = "main", n: int = 1, at: float = 1_750_000_000.0) -> Nudge:
    return Nudge(
        zone=zone,
        nudge_id=f"{zone}-{n}-abc",
        at=at,
        laeq=78.25,
        kind="dim",
        message={"en": "People are sleeping here.", "nl": "Hier slapen mensen."},
        evidence={"s1": 78.25},
        sensors=("s1",),
    )


class Setup:
    def __init__(
        self, tmp_path: Path, vapid: Path | None, clock: FixedClock, interval: int = 1800
    ) -> None:
        self.storage = Storage(tmp_path / "gw.db")
        self.metrics = Metrics()
        self.outbox = Outbox()
        self.config = WebPushConfig(
            vapid_private_key=vapid, subject=SUBJECT, ttl_s=900,
            per_subscriber_min_interval_s=interval,
        )  # fmt: skip
        self.notifier = Notifier(
            "site", self.config, self.storage, self.outbox, self.metrics, clock
        )

    def subscribe(self, svc: PushService, phone: Phone, zones: list[str]) -> None:
        self.storage.add_subscription(svc.endpoint(phone), phone.keys(), zones, 0.0)

    async def deliver(self, *nudges: Nudge) -> None:
        task = asyncio.create_task(self.notifier.run())
        try:
            for n in nudges:
                self.notifier.nudge(n)
            await asyncio.wait_for(self.notifier.drain(), 30)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


def verify_vapid(header: str, public: ec.EllipticCurvePublicKey, aud: str) -> dict[str, Any]:
    """Check ``vapid t=<JWT>, k=<key>`` (RFC 8292) and return the JWT claims."""
    scheme, _, params = header.partition(" ")
    assert scheme == "vapid"
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    point = public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert unb64url(fields["k"]) == point  # the key the push service will pin
    head, claims, sig = fields["t"].split(".")
    assert json.loads(unb64url(head)) == {"typ": "JWT", "alg": "ES256"}
    raw = unb64url(sig)
    assert len(raw) == 64  # JWS ES256: r || s
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
    body: dict[str, Any] = json.loads(unb64url(claims))
    assert body["aud"] == aud and body["sub"] == SUBJECT
    assert time.time() < body["exp"] <= time.time() + 24 * 3600  # RFC 8292 section 2
    return body


async def test_push_is_encrypted_signed_and_carries_ttl_and_topic(
    tmp_path: Path, push_service: PushService, vapid_key: tuple[Path, Any]
) -> None:
    path, public = vapid_key
    s = Setup(tmp_path, path, FixedClock(1_750_000_000.0))
    alice, bob, carol = Phone("alice"), Phone("bob"), Phone("carol")
    s.subscribe(push_service, alice, ["main"])
    s.subscribe(push_service, bob, ["main", "other"])
    s.subscribe(push_service, carol, ["other"])
    nudge = make_nudge()
    await s.deliver(nudge)

    # MQTT for the app backend: the contract's message, decodable by protocol/
    [(topic, body, qos)] = s.outbox.sent
    assert topic == "hushlight/v1/site/zones/main/nudge" and qos == 1
    wire = payloads.decode("nudge", body)
    assert wire["nudge_id"] == nudge.nudge_id and wire["at"] == nudge.at * 1000
    assert wire["message"] == dict(nudge.message) and wire["laeq"] == nudge.laeq

    # Web Push: only the zone's subscribers, each readable only with its own key
    got = {r.phone: r for r in push_service.received}
    assert sorted(got) == ["alice", "bob"]
    for phone in (alice, bob):
        r = got[phone.name]
        assert r.headers["TTL"] == "900"
        assert r.headers["Topic"] == "main"
        assert r.headers["Content-Encoding"] == "aes128gcm"
        verify_vapid(r.headers["Authorization"], public, f"http://127.0.0.1:{push_service.port}")
        plain = http_ece.decrypt(r.body, private_key=phone.key, auth_secret=phone.auth)
        assert payloads.decode("nudge", plain) == wire
    with pytest.raises(Exception):  # noqa: B017 -- any failure: alice's key cannot read bob's
        http_ece.decrypt(got["bob"].body, private_key=alice.key, auth_secret=alice.auth)
    assert s.metrics.push_sent.get("main") == 2
    assert delivered(s.storage, nudge.nudge_id, "webpush", push_service.endpoint(alice))
    assert delivered(s.storage, nudge.nudge_id, "mqtt")


async def test_signature_check_refuses_another_key(
    tmp_path: Path, push_service: PushService, vapid_key: tuple[Path, Any]
) -> None:
    # the verifier above is not a rubber stamp: a different site key fails it
    path, _ = vapid_key
    s = Setup(tmp_path, path, FixedClock(1_750_000_000.0))
    phone = Phone("alice")
    s.subscribe(push_service, phone, ["main"])
    await s.deliver(make_nudge())
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises((AssertionError, InvalidSignature)):
        verify_vapid(
            push_service.received[0].headers["Authorization"],
            other,
            f"http://127.0.0.1:{push_service.port}",
        )


async def test_one_push_per_subscriber_per_interval(
    tmp_path: Path, push_service: PushService, vapid_key: tuple[Path, Any]
) -> None:
    clock = FixedClock(1_750_000_000.0)
    s = Setup(tmp_path, vapid_key[0], clock, interval=600)
    s.subscribe(push_service, Phone("alice"), ["main", "other"])
    await s.deliver(make_nudge("main", 1), make_nudge("other", 1))
    assert len(push_service.received) == 1
    assert s.metrics.push_skipped.total() == 1
    clock.t += 599
    await s.deliver(make_nudge("main", 2))
    assert len(push_service.received) == 1
    clock.t += 1
    await s.deliver(make_nudge("main", 3))
    assert len(push_service.received) == 2
    # the MQTT side is never rate limited: the app backend sees every nudge
    assert len(s.outbox.sent) == 4


async def test_gone_subscription_is_removed_and_failures_are_counted(
    tmp_path: Path, push_service: PushService, vapid_key: tuple[Path, Any]
) -> None:
    s = Setup(tmp_path, vapid_key[0], FixedClock(1_750_000_000.0))
    gone, broken, fine = Phone("gone"), Phone("broken"), Phone("fine")
    for p in (gone, broken, fine):
        s.subscribe(push_service, p, ["main"])
    push_service.status = {"gone": 410, "broken": 500}
    # a push service nobody listens on
    s.storage.add_subscription("http://127.0.0.1:1/push/x", Phone("x").keys(), ["main"], 0.0)
    await s.deliver(make_nudge())
    assert s.storage.subscription(push_service.endpoint(gone)) is None
    assert s.storage.subscription(push_service.endpoint(broken)) is not None
    assert s.metrics.push_failed.get("gone") == 1
    assert s.metrics.push_failed.get("http_5xx") == 1
    assert s.metrics.push_failed.get("network") == 1
    assert s.metrics.push_sent.get("main") == 1
    assert s.metrics.subscriptions_removed.total() == 1


async def test_without_vapid_key_only_mqtt(tmp_path: Path, push_service: PushService) -> None:
    s = Setup(tmp_path, None, FixedClock(1_750_000_000.0))
    s.subscribe(push_service, Phone("alice"), ["main"])
    await s.deliver(make_nudge())
    assert len(s.outbox.sent) == 1 and push_service.received == []
