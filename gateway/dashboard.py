"""What the operator's dashboard shows: the street now, a zone's night, the verdict.

The street view comes from memory (the policy's windows and episodes, the
sensors' latest status) and is cheap, so it is sent to every open dashboard
each second.  The night and the verdict read the database, through a
read-only connection of their own: the gateway's writer keeps the minutes of
the current minute in memory and flushes them itself, so a reader never
writes or races it (the current minute shows up once it is over).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.client_exceptions import ClientConnectionResetError

from gateway.clock import Clock, iso_time
from gateway.config import HttpConfig, SiteConfig, ZoneConfig
from gateway.ingest import Ingest
from gateway.policy import zone_status
from gateway.stepper import Stepper
from gateway.storage import Storage

__all__ = ["MAX_NIGHT_HOURS", "Dashboard", "DashboardError", "DashboardPages"]

MAX_NIGHT_HOURS = 48
MAX_VERDICT_DAYS = 366
VERDICT_FOR_S = 60.0  # a verdict is recomputed at most this often (randomisation is not free)
MAX_STREAMS = 32  # live dashboards at once: each is a connection held open
WEB = Path(__file__).resolve().parent / "web" / "dashboard"
FILES = {  # what the dashboard serves, and nothing else from the folder
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


class DashboardError(ValueError):
    """A dashboard request that cannot be answered; the message says what to change."""


class Dashboard:
    def __init__(
        self,
        config: SiteConfig,
        clock: Clock,
        ingest: Ingest,
        stepper: Stepper,
        *,
        open_storage: Callable[[], Storage] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.ingest = ingest
        self.stepper = stepper
        self.open_storage = open_storage or (
            lambda: Storage(config.storage.path, read_only=True, timezone=config.timezone)
        )
        self._verdicts: dict[tuple[int, int], tuple[float, dict[str, Any]]] = {}
        self._verdict_lock = threading.Lock()

    # -------------------------------------------------------------- street

    def street(self) -> dict[str, Any]:
        """Every zone with its sensors' live levels and its lights, and the fleet's health."""
        now = self.clock.now()
        tz = self.config.tz
        state = self.stepper.state
        fleet = self.ingest.fleet()
        online = {f["sensor"]: f["online"] for f in fleet}
        zones = []
        for zone in self.config.zones:
            status = zone_status(self.config, state, zone.id, now)
            sensors = []
            for s in zone.sensors:
                lv = status["levels"][s]
                sensors.append(
                    {
                        "sensor": s,
                        "online": online.get(s),
                        "live": lv["live"],
                        "laeq": lv["laeq"],
                        "lafmax": lv["lafmax"],
                        "peaks": lv["peaks"],
                        "last_seen": lv["last_seen"],
                        "last_seen_iso": lv["last_seen_iso"],
                    }
                )
            zones.append(
                {
                    "zone": zone.id,
                    "active_schedule": status["active_schedule"],
                    "schedule": status["schedule"],
                    "trigger": status["trigger"],
                    "loud": status["loud"],
                    "cooldown_until_iso": status["cooldown_until_iso"],
                    "nudges_last_hour": status["nudges_last_hour"],
                    "episode": status["episode"],
                    "explain": status["explain"],
                    "sensors": sensors,
                    "lights": self._lights(zone, status["episode"]),
                }
            )
        for f in fleet:
            f["last_seen_iso"] = None if f["last_seen"] is None else iso_time(f["last_seen"], tz)
        return {
            "site": self.config.site_id,
            "timezone": self.config.timezone,
            "now": now,
            "now_iso": iso_time(now, tz),
            "zones": zones,
            "fleet": fleet,
        }

    def _lights(self, zone: ZoneConfig, episode: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Each light group's commanded level: the override in force, or the programme's."""
        overrides = {}
        if episode is not None and not episode["control"]:
            overrides = {o["group"]: o for o in episode["overrides"]}
        out = []
        for group in zone.light_groups:
            o = overrides.get(group)
            out.append(
                {
                    "group": group,
                    "level": zone.programme_level if o is None else o["level"],
                    "override": o is not None,
                    "acked": None if o is None else o["acked"],
                    "expires_at": None if o is None else o["expires_at"],
                    "expires_at_iso": None if o is None else o["expires_at_iso"],
                }
            )
        return out

    # -------------------------------------------------------------- night

    def night(self, zone_id: str, hours: float) -> dict[str, Any]:
        """Minute levels of a zone's sensors over the last `hours`, its threshold and episodes."""
        zone = self.config.zones_by_id.get(zone_id)
        if zone is None:
            known = ", ".join(z.id for z in self.config.zones)
            raise DashboardError(f"zone {zone_id[:40]!r} does not exist; known zones: {known}")
        if not 0 < hours <= MAX_NIGHT_HOURS:
            raise DashboardError(
                f"hours {hours!r} must be more than 0 and at most {MAX_NIGHT_HOURS}"
            )
        now = self.clock.now()
        start = now - 3600.0 * hours
        tz = self.config.tz
        with self.open_storage() as storage:
            rows = storage.minute_levels(zone.sensors, start, now + 60.0)
            episodes = storage.episodes(since=start, zone=zone_id)
        series: dict[str, list[list[float]]] = {s: [] for s in zone.sensors}
        for r in rows:
            series[r.sensor].append([r.minute, round(r.laeq, 2), round(r.lafmax, 2), r.peaks])
        current = (
            self.stepper.state.zones[zone_id].episode
            if zone_id in self.stepper.state.zones
            else None
        )
        return {
            "zone": zone_id,
            "now": now,
            "now_iso": iso_time(now, tz),
            "start": start,
            "trigger": zone.trigger,
            "threshold_db": zone.threshold_db,
            "peak_threshold_db": self.config.storage.peak_threshold_db,
            "series": series,
            "episodes": [
                {
                    "id": e.id,
                    "at": e.at,
                    "at_iso": iso_time(e.at, tz),
                    # still running: it ends at the latest now, as far as the picture goes
                    "ended_at": e.ended_at,
                    "running": e.ended_at is None and current is not None and current.id == e.id,
                    "control": e.control,
                    "kind": e.kind,
                    "laeq": round(e.laeq, 2),
                    "end_reason": e.end_reason,
                }
                for e in episodes
            ],
        }

    # -------------------------------------------------------------- verdict

    def verdict(self, days: int, minutes: int) -> dict[str, Any]:
        """The report of `gateway.report` over the last `days`, with each row's points to plot."""
        if not 1 <= days <= MAX_VERDICT_DAYS:
            raise DashboardError(
                f"days {days!r} must be a whole number from 1 to {MAX_VERDICT_DAYS}"
            )
        if not 1 <= minutes <= 60:
            raise DashboardError(f"minutes {minutes!r} must be a whole number from 1 to 60")
        key = (days, minutes)
        with self._verdict_lock:
            cached = self._verdicts.get(key)
            if cached is not None and time.monotonic() - cached[0] < VERDICT_FOR_S:
                return cached[1]
            report = self._verdict(days, minutes)
            self._verdicts[key] = (time.monotonic(), report)
            return report

    def _verdict(self, days: int, minutes: int) -> dict[str, Any]:
        # loaded when an operator first opens the verdict: its numpy and scipy add
        # some 15 MB that a gateway nobody asks for a verdict should not hold
        from gateway.report import as_dict, read_episodes
        from gateway.verdict import verdicts

        now = self.clock.now()
        since = now - 86400.0 * days
        tz = self.config.tz
        with self.open_storage() as storage:
            episodes = read_episodes(storage, since, None, minutes, now)
        found = verdicts(episodes, tz=tz.key)
        report = as_dict(
            episodes, found, self.config.storage.peak_threshold_db, minutes, since, now, None, tz
        )
        for row, v in zip(report["rows"], found, strict=True):
            row["points"] = [
                {
                    "control": p.control,
                    "at": p.at,
                    "peaks_before": round(p.peaks_before, 3),
                    "peaks_after": round(p.peaks_after, 3),
                    "laeq_before": round(p.laeq_before, 2),
                    "laeq_after": round(p.laeq_after, 2),
                }
                for p in v.points
            ]
        report["computed_at_iso"] = iso_time(now, tz)
        return report


# ------------------------------------------------------------------ HTTP


class DashboardPages:
    """The dashboard's routes: its page and files, its JSON, and the live stream.

    Read-only, so open to clients on the local network (loopback, private and
    link-local addresses); from elsewhere they need the operator token, as
    every endpoint that tells about the site does.
    """

    def __init__(
        self,
        dashboard: Dashboard,
        http: HttpConfig,
        *,
        period_s: float = 1.0,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self.dashboard = dashboard
        self.http = http
        self.period_s = period_s
        self.max_streams = max_streams
        self.streams = 0
        self._closing: asyncio.Event | None = None
        self._street: tuple[float, bytes] | None = None
        self._building = asyncio.Lock()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.root),
            web.get("/dashboard", self.root),
            web.get("/dashboard/", self.page),
            web.get("/dashboard/static/{name}", self.static),
            web.get("/api/dashboard/street", self.street),
            web.get("/api/dashboard/night", self.night),
            web.get("/api/dashboard/verdict", self.verdict),
            web.get("/api/dashboard/events", self.events),
        ]

    async def on_shutdown(self, app: web.Application) -> None:
        """Ends the live streams, which would otherwise hold the server's shutdown."""
        self._closing_event().set()

    def _closing_event(self) -> asyncio.Event:
        if self._closing is None:
            self._closing = asyncio.Event()
        return self._closing

    # -- access ------------------------------------------------------------

    def _refused(self, request: web.Request) -> web.Response | None:
        address = request.remote or ""
        if self.http.trust_forwarded_for:
            last = request.headers.get("X-Forwarded-For", "").rsplit(",", 1)[-1].strip()
            address = last or address
        if _on_local_network(address):
            return None
        token = self.http.token
        given = request.headers.get("Authorization", "")
        if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return None
        return web.json_response(
            {
                "error": f"the dashboard is open to the local network only, and {address[:60]!r} "
                "is not on it; open it from the site's network, or send "
                "Authorization: Bearer <http.token>"
            },
            status=403,
        )

    # -- files -------------------------------------------------------------

    async def root(self, request: web.Request) -> web.StreamResponse:
        # returned, not raised: the API's error middleware turns raised ones into JSON
        return web.Response(status=302, headers={"Location": "/dashboard/"})

    async def page(self, request: web.Request) -> web.StreamResponse:
        return self._refused(request) or _file("index.html")

    async def static(self, request: web.Request) -> web.StreamResponse:
        denied = self._refused(request)
        if denied:
            return denied
        return _file(request.match_info["name"])

    # -- data --------------------------------------------------------------

    async def street(self, request: web.Request) -> web.StreamResponse:
        denied = self._refused(request)
        if denied:
            return denied
        return web.Response(body=await self._street_json(), content_type="application/json")

    async def _street_json(self) -> bytes:
        """The street view, built once per half period whatever the number of viewers.

        Built in a thread: with 10,000 sensors it takes some 30 ms, which would
        otherwise hold up the records behind it.  It reads the policy's state, an
        immutable snapshot, and the sensors' latest status, replaced whole.
        """
        async with self._building:
            if self._street is None or time.monotonic() - self._street[0] >= self.period_s / 2:
                body = await asyncio.to_thread(_street_bytes, self.dashboard)
                self._street = (time.monotonic(), body)
            return self._street[1]

    async def night(self, request: web.Request) -> web.StreamResponse:
        denied = self._refused(request)
        if denied:
            return denied
        zone = request.query.get("zone", "")
        text = request.query.get("hours", "8")
        try:
            hours = float(text)
        except ValueError:
            return _error(400, f"hours {text[:20]!r} must be a number of hours, like 8")
        try:
            body = await asyncio.to_thread(self.dashboard.night, zone, hours)
        except DashboardError as exc:
            return _error(400, str(exc))
        return web.json_response(body)

    async def verdict(self, request: web.Request) -> web.StreamResponse:
        denied = self._refused(request)
        if denied:
            return denied
        values = []
        for name, default in (("days", "30"), ("minutes", "10")):
            text = request.query.get(name, default)
            try:
                values.append(int(text))
            except ValueError:
                return _error(400, f"{name} {text[:20]!r} must be a whole number")
        try:
            body = await asyncio.to_thread(self.dashboard.verdict, values[0], values[1])
        except DashboardError as exc:
            return _error(400, str(exc))
        return web.json_response(body)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the street view every period, until the viewer leaves."""
        denied = self._refused(request)
        if denied:
            return denied
        if self.streams >= self.max_streams:
            return _error(
                503,
                f"{self.streams} dashboards are open, the most this gateway serves live; "
                "close one, or reload later",
            )
        closing = self._closing_event()
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # a proxy in front must not hold the events back
            }
        )
        self.streams += 1
        try:
            await response.prepare(request)
            while not closing.is_set():
                body = await self._street_json()
                await response.write(b"event: street\ndata: " + body + b"\n\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closing.wait(), self.period_s)
        except (ConnectionResetError, ClientConnectionResetError):
            pass  # the viewer left
        finally:
            self.streams -= 1
        return response


def _street_bytes(dashboard: Dashboard) -> bytes:
    return json.dumps(dashboard.street()).encode()


def _on_local_network(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_private or ip.is_link_local


def _file(name: str) -> web.StreamResponse:
    kind = FILES.get(name)
    if kind is None:
        return _error(404, f"the dashboard has no file {name[:60]!r}")
    return web.FileResponse(WEB / name, headers={"Content-Type": kind, "Cache-Control": "no-cache"})


def _error(status: int, sentence: str) -> web.Response:
    return web.json_response({"error": sentence}, status=status)
