"""The residents' pages: per zone, a page to subscribe to its nudges by Web Push.

Public, same origin as the subscription API (so no CORS):

    GET /residents/{zone}        the zone's page (one static page; its script reads the zone)
    GET /residents/sw.js         the service worker that shows a nudge (scope /residents/)
    GET /residents/resident.js   the page's script; resident.css its style, icon.svg its icon
    GET /api/residents/{zone}    what the page tells a resident: the nudge text in each of
                                 the zone's languages, when and how often at most
    GET /api/push/key            the VAPID public key (base64url, uncompressed P-256 point)
                                 a browser needs to subscribe; 503 with the reason while
                                 Web Push is off

The public key is derived from ``webpush.vapid_private_key``, the file pywebpush
signs with (PEM, or base64url DER as py_vapid also reads); it is read again when
the file changes, so a replaced key is served without a restart.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.config import SiteConfig, ZoneConfig
from gateway.errors import GatewayError

__all__ = ["ResidentPages", "VapidKeyError", "vapid_public_key", "zone_info"]

log = logging.getLogger("hushlight.residents")

STATIC = Path(__file__).resolve().parent / "resident"
# file name -> content type; nothing else in STATIC is served
FILES = {
    "resident.js": "text/javascript",
    "resident.css": "text/css",
    "sw.js": "text/javascript",
    "icon.svg": "image/svg+xml",
}
FILE_PATTERN = "(?:" + "|".join(re.escape(name) for name in FILES) + ")"
ZONE_PATTERN = "[a-z0-9-]{1,32}"  # as config's zone ids; no dot, so never a file name above
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # the page loads nothing from elsewhere and embeds in nothing
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
}


class VapidKeyError(GatewayError):
    """The VAPID private key cannot give a public key; the message says why."""


def vapid_public_key(path: Path) -> str:
    """The base64url (unpadded) uncompressed P-256 public key of the private key in `path`."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise VapidKeyError(
            f"the VAPID key file {path} cannot be read ({exc.strerror}); "
            "check webpush.vapid_private_key in the site config"
        ) from None
    try:
        if b"-----BEGIN" in text:
            key: Any = serialization.load_pem_private_key(text, password=None)
        else:
            der = text.strip().replace(b"\n", b"")
            key = serialization.load_der_private_key(
                base64.urlsafe_b64decode(der + b"=" * (-len(der) % 4)), password=None
            )
    except (ValueError, TypeError, binascii.Error) as exc:
        raise VapidKeyError(
            f"the VAPID key file {path} holds no readable unencrypted private key ({exc}); "
            "write a P-256 key in PEM, e.g. with `vapid --gen`"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise VapidKeyError(
            f"the VAPID key in {path} is not a P-256 (secp256r1) EC key, which Web Push needs; "
            "write one with `vapid --gen`"
        )
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def zone_info(config: SiteConfig, zone: ZoneConfig) -> dict[str, Any]:
    """What a resident is told about `zone`'s notifications, from the config in force."""
    push = config.webpush
    languages = sorted(zone.messages) or ["en"]
    windows = [
        {
            "days": sorted(w.days),  # 0 = Monday
            "start": _hhmm(w.start_min),
            "end": _hhmm(w.end_min),
            "text": w.text,
        }
        for w in zone.schedule.windows
    ]
    return {
        "zone": zone.id,
        "site": config.site_id,
        "timezone": config.timezone,
        "languages": languages,
        "messages": dict(zone.messages),
        "push_enabled": push.enabled,
        "active_windows": windows,
        # a subscriber hears of at most one nudge per interval, whatever the street does
        "min_interval_s": push.per_subscriber_min_interval_s,
        "max_nudges_per_hour": zone.max_nudges_per_hour,
        "control_fraction": zone.control_fraction,
        "ttl_s": push.ttl_s,
    }


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


class ResidentPages:
    """The residents' routes; `routes()` goes into the gateway's aiohttp application."""

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self._key: tuple[tuple[int, int, int], str] | None = None  # (stat, public key)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"/residents/{{zone:{ZONE_PATTERN}}}", self.page),
            web.get(f"/residents/{{zone:{ZONE_PATTERN}}}/", self.without_slash),
            web.get(f"/residents/{{name:{FILE_PATTERN}}}", self.file),
            web.get(f"/api/residents/{{zone:{ZONE_PATTERN}}}", self.info),
            web.get("/api/push/key", self.push_key),
        ]

    def _zone(self, request: web.Request) -> ZoneConfig | None:
        return self.config.zones_by_id.get(request.match_info["zone"])

    def _unknown(self, request: web.Request) -> web.Response:
        known = ", ".join(z.id for z in self.config.zones)
        return web.json_response(
            {"error": f"zone {request.match_info['zone']!r} does not exist; known zones: {known}"},
            status=404,
        )

    async def page(self, request: web.Request) -> web.StreamResponse:
        if self._zone(request) is None:
            return self._unknown(request)
        return web.Response(
            body=(STATIC / "resident.html").read_bytes(),
            content_type="text/html",
            charset="utf-8",
            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
        )

    async def without_slash(self, request: web.Request) -> web.StreamResponse:
        # the page's files are relative to it: from ".../zone/" they would not be found
        # (a response, not a raised redirect: the API's error middleware turns those into JSON)
        location = f"/residents/{request.match_info['zone']}"
        return web.Response(status=301, headers={"Location": location})

    async def file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
        if name == "sw.js":
            # the worker controls every zone's page under /residents/
            headers["Service-Worker-Allowed"] = "/residents/"
        return web.Response(
            body=(STATIC / name).read_bytes(),
            content_type=FILES[name],
            charset="utf-8",
            headers=headers,
        )

    async def info(self, request: web.Request) -> web.Response:
        zone = self._zone(request)
        if zone is None:
            return self._unknown(request)
        return web.json_response(zone_info(self.config, zone), headers=SECURITY_HEADERS)

    async def push_key(self, request: web.Request) -> web.Response:
        path = self.config.webpush.vapid_private_key
        if path is None:
            return web.json_response(
                {
                    "error": "Web Push is off on this gateway (no [webpush] vapid_private_key "
                    "in its config), so there is no key to subscribe with"
                },
                status=503,
            )
        try:
            key = await asyncio.to_thread(self._public_key, path)
        except VapidKeyError as exc:
            log.error("%s", exc)
            return web.json_response(
                {
                    "error": "Web Push is off on this gateway: its VAPID key cannot be read "
                    "(the gateway's log says why)"
                },
                status=503,
            )
        return web.json_response({"key": key}, headers={"Cache-Control": "no-cache"})

    def _public_key(self, path: Path) -> str:
        try:
            st = path.stat()
        except OSError:
            stamp = (0, 0, 0)  # vapid_public_key says why
        else:
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._key
        if cached is not None and cached[0] == stamp and stamp != (0, 0, 0):
            return cached[1]
        key = vapid_public_key(path)
        self._key = (stamp, key)
        return key
