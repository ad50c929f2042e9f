"""The residents' routes of a real (not connected) gateway: the page, its figures, the VAPID key."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid

from gateway.config import load_config
from gateway.residents import VapidKeyError, vapid_public_key
from gateway.service import Gateway
from tests.gateway.conftest import write_config


def write_key(path: Path, key: ec.EllipticCurvePrivateKey, *, der: bool = False) -> Path:
    if der:
        raw = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.write_bytes(base64.urlsafe_b64encode(raw).rstrip(b"="))
    else:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


def point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Site:
    def __init__(self, gw: Gateway, session: aiohttp.ClientSession) -> None:
        self.gw = gw
        self.session = session
        self.base = f"http://127.0.0.1:{gw.http.port}"

    async def get(self, path: str) -> tuple[int, Any, aiohttp.ClientResponse]:
        async with self.session.get(self.base + path) as r:
            body: Any = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body, r


async def running(tmp_path: Path, **write: Any) -> AsyncIterator[Site]:
    cfg = load_config(write_config(tmp_path, "mqtt://127.0.0.1:1", **write))
    gw = Gateway(cfg, install_signals=False)
    task = asyncio.create_task(gw.http.serve(gw.http_ready))
    await asyncio.wait_for(gw.http_ready.wait(), 10)
    try:
        async with aiohttp.ClientSession() as session:
            yield Site(gw, session)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gw.storage.close()


async def test_the_key_is_the_public_half_of_the_key_pywebpush_signs_with(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = write_key(tmp_path / "vapid.pem", key)
    async for site in running(tmp_path, webpush={"vapid_private_key": str(path)}):
        status, body, r = await site.get("/api/push/key")
        assert status == 200 and r.headers["Cache-Control"] == "no-cache"
        served = unb64url(body["key"])
        assert served == point(key) and len(served) == 65 and served[0] == 4
        # py_vapid is what pywebpush reads the file with: the same key, seen by it
        signer = Vapid.from_file(str(path))
        assert served == signer.public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

        # a key replaced on disk is served without a restart
        other = ec.generate_private_key(ec.SECP256R1())
        write_key(path, other)
        os.utime(path, ns=(1, 1))  # a new stamp even within the file system's time resolution
        status, body, _ = await site.get("/api/push/key")
        assert status == 200 and unb64url(body["key"]) == point(other) != point(key)


def test_a_base64url_der_key_as_py_vapid_reads_it(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = write_key(tmp_path / "vapid.der", key, der=True)
    assert unb64url(vapid_public_key(path)) == point(key)
    assert unb64url(vapid_public_key(path)) == Vapid.from_file(str(path)).public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot be read (No such file or directory)"),
        (b"not a key at all", "holds no readable unencrypted private key"),
        ("p384", "is not a P-256 (secp256r1) EC key"),
    ],
)
def test_an_unusable_key_file_says_why(tmp_path: Path, content: Any, says: str) -> None:
    path = tmp_path / "vapid.pem"
    if content == "p384":
        write_key(path, ec.generate_private_key(ec.SECP384R1()))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(VapidKeyError) as caught:
        vapid_public_key(path)
    assert says in str(caught.value) and str(path) in str(caught.value)


async def test_no_key_while_push_is_off_or_the_key_is_unreadable(tmp_path: Path) -> None:
    async for site in running(tmp_path):
        status, body, _ = await site.get("/api/push/key")
        assert status == 503 and "Web Push is off" in body["error"]
        assert "vapid_private_key" in body["error"]
    missing = tmp_path / "nowhere" / "vapid.pem"
    async for site in running(tmp_path, webpush={"vapid_private_key": str(missing)}):
        status, body, _ = await site.get("/api/push/key")
        # the path stays in the gateway's log, not in a public answer
        assert status == 503 and "cannot be read" in body["error"]
        assert str(missing) not in body["error"]


async def test_the_page_tells_the_zones_own_figures(tmp_path: Path) -> None:
    zone = {
        "schedule": ["fri,sat 22:00-06:00", "sun-thu 23:00-05:00"],
        "max_nudges_per_hour": 4,
        "control_fraction": 0.25,
    }
    webpush = {"per_subscriber_min_interval_s": 2700, "ttl_s": 600}
    async for site in running(tmp_path, zone=zone, webpush=webpush):
        cfg = site.gw.config
        status, info, _ = await site.get("/api/residents/main")
        assert status == 200
        main = cfg.zones_by_id["main"]
        assert info["languages"] == sorted(main.messages) == ["en", "nl"]
        assert info["messages"] == dict(main.messages)
        assert info["min_interval_s"] == cfg.webpush.per_subscriber_min_interval_s == 2700
        assert info["max_nudges_per_hour"] == main.max_nudges_per_hour == 4
        assert info["control_fraction"] == main.control_fraction == 0.25
        assert info["ttl_s"] == 600 and info["push_enabled"] is False
        assert info["timezone"] == "Europe/Brussels"
        assert [(w["days"], w["start"], w["end"]) for w in info["active_windows"]] == [
            ([4, 5], "22:00", "06:00"),
            ([0, 1, 2, 3, 6], "23:00", "05:00"),
        ]

        status, html, r = await site.get("/residents/main")
        assert status == 200 and r.content_type == "text/html"
        assert '<script src="resident.js"' in html
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        async with site.session.get(site.base + "/residents/main/", allow_redirects=False) as moved:
            assert moved.status == 301 and moved.headers["Location"] == "/residents/main"
        status, script, r = await site.get("/residents/sw.js")
        assert status == 200 and r.content_type == "text/javascript"
        assert r.headers["Service-Worker-Allowed"] == "/residents/"
        assert 'addEventListener("push"' in script
        for name, kind in (("resident.js", "text/javascript"), ("resident.css", "text/css")):
            status, _, r = await site.get(f"/residents/{name}")
            assert status == 200 and r.content_type == kind

        for path in ("/residents/elsewhere", "/api/residents/elsewhere"):
            status, body, _ = await site.get(path)
            assert status == 404 and "'elsewhere' does not exist" in body["error"]
            assert "known zones: main" in body["error"]
        status, _, _ = await site.get("/residents/resident.html")  # only the listed files
        assert status == 404
