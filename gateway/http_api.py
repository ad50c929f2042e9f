"""The gateway's small HTTP API (aiohttp), on localhost unless configured otherwise.

Public:
    GET    /api/health          is the service up, connected, keeping up
    POST   /api/subscriptions   {"subscription": <W3C PushSubscription JSON>, "zones": [ids]}
    DELETE /api/subscriptions   {"endpoint": "https://..."}
    GET    /dashboard/          the operator's dashboard, open to the local network only
                                (`gateway.dashboard`), with /api/dashboard/* and its live events
    GET    /residents/{zone}    a zone's page to subscribe to its nudges (`gateway.residents`),
                                with /api/residents/{zone} and /api/push/key (the VAPID key)

Operator (``Authorization: Bearer <http.token>``; refused while no token is set):
    GET    /api/zones           each zone's current state
    GET    /api/decisions       recent decisions, newest first (``?limit=1..1000``, default 100)
    GET    /metrics             Prometheus text format

Subscriptions come from anybody's phone, so they are checked before they are
stored: a push endpoint on https (http only on a loopback address, for local
tests), a ``p256dh`` that is an uncompressed P-256 point, a 16-byte ``auth``
secret, and zone ids that exist.  One client address may add or remove
``http.subscribe_per_minute`` a minute (429 with ``Retry-After`` past it; an
IPv6 client is its /64, which one household usually holds whole), and at most
``http.max_subscriptions`` are stored (503 once full; replacing one that exists
is always possible).  While Web Push is off (no VAPID key) a new subscription
is refused with 503: nothing would ever be pushed to it.  Errors are JSON
``{"error": sentence}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hmac
import ipaddress
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.config import HttpConfig
from gateway.dashboard import DashboardPages
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.residents import ResidentPages

__all__ = [
    "GatewayView",
    "HttpApi",
    "RateLimit",
    "SubscriptionError",
    "check_subscription",
    "client_key",
]

log = logging.getLogger("hushlight.http")

MAX_BODY = 16 * 1024  # a push subscription is a few hundred bytes
MAX_ZONES = 64
MAX_LIMIT = 1000
MAX_CLIENTS = 10_000  # client addresses the subscription rate limit remembers
RENDER_SLICE_S = 0.002  # at most this long building /metrics per event-loop turn


class GatewayView(Protocol):
    """What the API reads from the running service."""

    def health(self) -> Mapping[str, Any]: ...

    def zones(self) -> Sequence[Mapping[str, Any]]: ...

    def decisions(self, limit: int) -> Sequence[Mapping[str, Any]]: ...

    def zone_ids(self) -> frozenset[str]: ...

    def subscribe(self, endpoint: str, p256dh: str, auth: str, zones: Sequence[str]) -> bool:
        """Store it; False if it is new and the cap of subscriptions is reached."""
        ...

    def unsubscribe(self, endpoint: str) -> bool: ...


class RateLimit:
    """A token bucket per client: `per_minute` requests a minute, in bursts of as many.

    At most `max_clients` buckets are kept (the least recently seen go first),
    so a flood from many addresses cannot grow memory.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0  # tokens a second
        self.burst = float(per_minute)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = (
            collections.OrderedDict()
        )  # client -> (tokens, when counted)

    def take(self, client: str) -> float:
        """0.0 if `client` may go ahead now (one token taken), else the seconds to wait."""
        now = self.clock()
        tokens, then = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


def client_key(address: str) -> str:
    """The rate limit's key for a client address: itself, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class SubscriptionError(ValueError):
    """A push subscription that cannot be stored; the message says what is wrong."""


def _b64url(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise SubscriptionError(f"keys.{what} must be a base64url string")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise SubscriptionError(f"keys.{what} {value[:40]!r} is not base64url") from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_subscription(body: Any, known_zones: frozenset[str]) -> tuple[str, str, str, list[str]]:
    """(endpoint, p256dh, auth, zones) from a POST body; `SubscriptionError` says what is wrong."""
    if not isinstance(body, dict):
        raise SubscriptionError(
            'the body must be a JSON object {"subscription": ..., "zones": [...]}'
        )
    sub = body.get("subscription")
    if not isinstance(sub, dict):
        raise SubscriptionError(
            '"subscription" must be the JSON of a browser PushSubscription (endpoint and keys)'
        )
    endpoint = sub.get("endpoint")
    if not isinstance(endpoint, str) or len(endpoint) > 1024:
        raise SubscriptionError("subscription.endpoint must be a URL of at most 1024 characters")
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if not host or not (parts.scheme == "https" or (parts.scheme == "http" and _loopback(host))):
        raise SubscriptionError(
            f"subscription.endpoint {endpoint[:80]!r} must be an https:// URL of a push service"
        )
    keys = sub.get("keys")
    if not isinstance(keys, dict):
        raise SubscriptionError('subscription.keys must be an object with "p256dh" and "auth"')
    p256dh = keys.get("p256dh")
    raw = _b64url(p256dh, "p256dh")
    try:
        if len(raw) != 65 or raw[0] != 4:
            raise ValueError
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise SubscriptionError(
            "keys.p256dh must be an uncompressed P-256 public key (65 bytes, base64url)"
        ) from None
    auth = keys.get("auth")
    if len(_b64url(auth, "auth")) != 16:
        raise SubscriptionError("keys.auth must be a 16-byte secret (base64url)")
    zones = body.get("zones")
    if (
        not isinstance(zones, list)
        or not zones
        or len(zones) > MAX_ZONES
        or not all(isinstance(z, str) for z in zones)
    ):
        raise SubscriptionError(f'"zones" must be a list of 1 to {MAX_ZONES} zone ids')
    unknown = sorted(set(zones) - known_zones)
    if unknown:
        known = ", ".join(sorted(known_zones))
        raise SubscriptionError(f"zone {unknown[0][:40]!r} does not exist; known zones: {known}")
    assert isinstance(p256dh, str) and isinstance(auth, str)
    return endpoint, p256dh, auth, sorted(set(zones))


def _error(status: int, sentence: str) -> web.Response:
    return web.json_response({"error": sentence}, status=status)


class HttpApi:
    def __init__(
        self,
        config: HttpConfig,
        view: GatewayView,
        metrics: Metrics,
        *,
        push_enabled: bool,
        refresh_metrics: Callable[[], None] | None = None,
        residents: ResidentPages | None = None,
        dashboard: DashboardPages | None = None,
    ) -> None:
        self.config = config
        self.push_enabled = push_enabled
        self.view = view
        self.metrics = metrics
        self.refresh_metrics = refresh_metrics
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[self._errors])
        self.app.add_routes(
            [
                web.get("/api/health", self.health),
                web.get("/api/zones", self.zones),
                web.get("/api/decisions", self.decisions),
                web.post("/api/subscriptions", self.subscribe),
                web.delete("/api/subscriptions", self.unsubscribe),
                web.get("/metrics", self.prometheus),
            ]
        )
        if residents is not None:
            self.app.add_routes(residents.routes())
        if dashboard is not None:
            self.app.add_routes(dashboard.routes())
            self.app.on_shutdown.append(dashboard.on_shutdown)
        self.port: int | None = None
        self.subscribe_limit = RateLimit(config.subscribe_per_minute)

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"the body is larger than {MAX_BODY} bytes")
        except web.HTTPException as exc:
            return _error(exc.status, exc.reason)

    def _authorised(self, request: web.Request) -> web.Response | None:
        token = self.config.token
        if not token:
            return _error(403, "operator endpoints are off: set http.token in the site config")
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return web.json_response(
                {"error": "this endpoint needs Authorization: Bearer <http.token>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="hushlight"'},
            )
        return None

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.view.health()))

    async def zones(self, request: web.Request) -> web.Response:
        return self._authorised(request) or web.json_response({"zones": list(self.view.zones())})

    async def decisions(self, request: web.Request) -> web.Response:
        denied = self._authorised(request)
        if denied:
            return denied
        text = request.query.get("limit", "100")
        try:
            limit = int(text)
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_LIMIT:
            return _error(400, f"limit {text[:20]!r} must be a whole number from 1 to {MAX_LIMIT}")
        rows = await asyncio.to_thread(self.view.decisions, limit)
        return web.json_response({"decisions": list(rows)})

    async def prometheus(self, request: web.Request) -> web.Response:
        denied = self._authorised(request)
        if denied:
            return denied
        if self.refresh_metrics is not None:
            self.refresh_metrics()
        # With 10,000 sensors the text is ~50,000 lines, 20-60 ms of work: built in
        # slices, so a scrape does not hold up the records (and overrides) behind it.
        lines: list[str] = []
        turn = time.perf_counter()
        for line in self.metrics.lines():
            lines.append(line)
            if time.perf_counter() - turn >= RENDER_SLICE_S:
                await asyncio.sleep(0)
                turn = time.perf_counter()
        lines.append("")
        return web.Response(
            text="\n".join(lines),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    async def _json_body(self, request: web.Request) -> Any:
        try:
            return await request.json(loads=_strict_loads)
        except (ValueError, UnicodeDecodeError):
            raise SubscriptionError("the body is not valid JSON") from None

    def _client(self, request: web.Request) -> str:
        address = request.remote or ""
        if self.config.trust_forwarded_for:
            forwarded = request.headers.get("X-Forwarded-For", "")
            # the last entry is the one our proxy added; the ones before are the client's word
            last = forwarded.rsplit(",", 1)[-1].strip()
            if last:
                address = last
        return client_key(address)

    def _too_often(self, request: web.Request) -> web.Response | None:
        wait = self.subscribe_limit.take(self._client(request))
        if wait <= 0.0:
            return None
        self.metrics.http_refused.inc("rate_limited")
        seconds = max(1, math.ceil(wait))
        return web.json_response(
            {
                "error": f"too many subscription requests from this address "
                f"(at most {self.config.subscribe_per_minute} a minute); "
                f"try again in {seconds} s"
            },
            status=429,
            headers={"Retry-After": str(seconds)},
        )

    async def subscribe(self, request: web.Request) -> web.Response:
        limited = self._too_often(request)
        if limited:
            return limited
        if not self.push_enabled:
            # stored, it would leave a resident believing they will hear of nudges
            self.metrics.http_refused.inc("push_off")
            return _error(
                503,
                "Web Push is off on this gateway (no [webpush] vapid_private_key in its "
                "config), so a subscription would never receive a nudge; nothing was stored",
            )
        try:
            body = await self._json_body(request)
            endpoint, p256dh, auth, zones = check_subscription(body, self.view.zone_ids())
        except SubscriptionError as exc:
            return _error(400, str(exc))
        # database work off the event loop: anybody may POST here
        if not await asyncio.to_thread(self.view.subscribe, endpoint, p256dh, auth, zones):
            self.metrics.http_refused.inc("subscriptions_full")
            log.warning(
                "subscription refused: %d are stored, the most http.max_subscriptions allows",
                self.config.max_subscriptions,
            )
            return web.json_response(
                {
                    "error": "this service takes no new subscriptions for now "
                    "(it holds as many as it is set to); try again later"
                },
                status=503,
                headers={"Retry-After": "3600"},
            )
        return web.json_response({"endpoint": endpoint, "zones": zones}, status=201)

    async def unsubscribe(self, request: web.Request) -> web.Response:
        limited = self._too_often(request)
        if limited:
            return limited
        try:
            body = await self._json_body(request)
        except SubscriptionError as exc:
            return _error(400, str(exc))
        endpoint = body.get("endpoint") if isinstance(body, dict) else None
        if not isinstance(endpoint, str) or not endpoint:
            return _error(400, 'the body must be {"endpoint": "<the subscription endpoint>"}')
        if not await asyncio.to_thread(self.view.unsubscribe, endpoint):
            return _error(404, "no subscription has this endpoint")
        return web.Response(status=204)

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        """Listen until cancelled."""
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port)
            try:
                await site.start()
            except OSError as exc:
                raise GatewayError(
                    f"the HTTP API cannot listen on {self.config.host}:{self.config.port} "
                    f"({exc.strerror}); set [http] host and port to a free address"
                ) from exc
            # the bound port (the config may say 0: any free port)
            self.port = int(runner.addresses[0][1]) if runner.addresses else self.config.port
            log.info("HTTP API on http://%s:%s", self.config.host, self.port)
            if ready is not None:
                ready.set()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


def _strict_loads(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)
