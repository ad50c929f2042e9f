"""Serve signed releases to the sensors of a site over MQTT (the host side of an update).

The sensor drives the transfer (protocol/ota.py): after an ``ota/offer`` it
asks with ``ota/get`` for at most WINDOW bytes from the first byte it lacks
and re-asks when nothing arrives, so this side only answers.  One server
holds one or more releases and answers every sensor of its site that asks
for a version it holds; a get for another version, an offset past the end, a
bad length or a payload that is not a get is counted in `ignored` and
otherwise ignored.  It also follows the sensors' retained statuses, so a
roll-out sees each sensor's `ota` state, version and reason as they change.

Use::

    server = ReleaseServer("leuven", [Path("releases/hushlight-0.2.0")])
    async with server.connect("mqtts://broker:8883", username="operator",
                              password=secret, ca="ca.pem"):
        await server.offer("ns-01", "0.2.0")
        async with asyncio.timeout(600):
            await server.wait_until(lambda: server.ota_state("ns-01") in ("confirmed", "refused"))
        server.progress("ns-01")      # (bytes served so far, release bytes)
        server.statuses["ns-01"]      # its last status (protocol.payloads.decode_status)

`connect` makes the first connection before it returns (a broker that cannot
be reached is a ToolError naming it), then keeps the connection up in one
task it owns, reconnecting with a capped random back-off; an offer made
while the link is down goes out once it is back.  `on_status` callbacks run
for every status that arrives; `wait_until` wakes on each.

For tests, a `Release` can stop its bytes early (`truncate_at`: the empty end
chunk at that offset instead of at its total) or carry a changed offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.mqtt import Backoff, parse_broker_url
from protocol import ota, payloads, topics
from protocol.errors import ProtocolError
from tools import release
from tools.errors import ToolError, UsageError

__all__ = ["Release", "ReleaseServer", "chunks_for"]

log = logging.getLogger("hushlight.ota_serve")

# seconds between attempts to publish while the link is going down or coming back
RETRY_S = 0.5
# the reasons a message is counted in `ReleaseServer.ignored`
IGNORED = ("bad_request", "unknown_version", "bad_offset", "bad_length", "bad_status")


@dataclass(frozen=True)
class Release:
    """One release as served: its version, its offer and its bytes as transferred.

    `end`: where the served bytes stop (the empty end chunk goes there);
    normally len(data), less to serve a truncated release."""

    version: str
    offer: dict[str, Any]
    data: bytes
    end: int = -1

    def __post_init__(self) -> None:
        if self.end < 0:
            object.__setattr__(self, "end", len(self.data))
        if not 0 <= self.end <= len(self.data):
            raise ValueError(f"end {self.end} is outside the release's {len(self.data)} bytes")

    @property
    def total(self) -> int:
        return len(self.data)

    @classmethod
    def from_bundle(
        cls,
        bundle: release.Bundle,
        *,
        truncate_at: int | None = None,
        offer: dict[str, Any] | None = None,
    ) -> Release:
        """The release of a bundle (release.read_bundle / check_bundle); `offer`
        replaces fields of its offer, `truncate_at` stops its bytes there."""
        data = bundle.release_bytes()
        return cls(
            bundle.version,
            {**bundle.offer(), **(offer or {})},
            data,
            len(data) if truncate_at is None else truncate_at,
        )

    @classmethod
    def from_dir(
        cls,
        path: Path,
        *,
        pub: Path | tuple[int, int] | None = None,
        truncate_at: int | None = None,
    ) -> Release:
        """The release in a bundle folder, checked against `pub` when given."""
        bundle = release.check_bundle(path, pub) if pub is not None else release.read_bundle(path)
        return cls.from_bundle(bundle, truncate_at=truncate_at)


def chunks_for(rel: Release, offset: int, length: int) -> list[bytes]:
    """The chunk messages answering a get of `length` bytes from `offset`:
    at most CHUNK bytes each, in order, then the empty end chunk when the
    range reaches the end.  The caller checks offset and length."""
    stop = min(offset + length, rel.end)
    out = [
        ota.chunk(o, rel.data[o : min(o + ota.CHUNK, stop)]) for o in range(offset, stop, ota.CHUNK)
    ]
    if offset + length >= rel.end:
        out.append(ota.chunk(rel.end, b""))
    return out


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class _Sensor:
    version: str | None = None  # the release it was offered or last asked for
    served: int = 0  # end of the furthest range answered


@dataclass
class _Link:
    url: str
    host: str
    port: int
    tls: ssl.SSLContext | None
    username: str | None
    password: str | None
    identifier: str
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    client: aiomqtt.Client | None = None


class ReleaseServer:
    """Serves `releases` (bundle folders, bundles or `Release`s) to the sensors of `site`."""

    def __init__(
        self,
        site: str,
        releases: Iterable[Path | release.Bundle | Release],
        *,
        pub: Path | tuple[int, int] | None = None,
    ) -> None:
        self.site = topics.check_id("site", site)
        self.releases: dict[str, Release] = {}
        for item in releases:
            if isinstance(item, Path):
                rel = Release.from_dir(item, pub=pub)
            elif isinstance(item, release.Bundle):
                rel = Release.from_bundle(item)
            else:
                rel = item
            self.releases[rel.version] = rel
        self.statuses: dict[str, dict[str, Any]] = {}
        self.ignored: Counter[str] = Counter()
        self.gets: Counter[str] = Counter()  # get requests answered, per sensor
        self.connections = 0  # connections made to the broker (more than 1: it reconnected)
        self.on_status: list[Callable[[str, dict[str, Any]], None]] = []
        self._sensors: dict[str, _Sensor] = {}
        self._changed = asyncio.Condition()
        self._link: _Link | None = None
        self._root = topics.root(self.site) + "/sensors/"

    # ---- what the roll-out reads ----------------------------------------------

    def progress(self, sensor: str) -> tuple[int, int]:
        """(bytes served to `sensor` so far, bytes of its release); (0, 0) before
        it was offered one or asked for one."""
        state = self._sensors.get(sensor)
        if state is None or state.version not in self.releases:
            return (0, 0)
        return (state.served, self.releases[state.version].total)

    def ota_state(self, sensor: str) -> str | None:
        """The `ota` field of the sensor's last status (None: none seen)."""
        value = self.statuses.get(sensor, {}).get("ota")
        return value if isinstance(value, str) else None

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds, checked now and at each status that
        arrives (bound the wait with `asyncio.timeout`)."""
        async with self._changed:
            await self._changed.wait_for(predicate)

    # ---- what the roll-out does -----------------------------------------------

    async def offer(self, sensor: str, version: str, **changes: Any) -> None:
        """Offer `version` (one of `releases`) to `sensor`; `changes` replace
        fields of the offer (tests)."""
        topics.check_id("sensor", sensor)
        rel = self.releases.get(version)
        if rel is None:
            raise UsageError(
                f"release {version} is not served here (serving {', '.join(self.releases)})"
            )
        self._sensors[sensor] = _Sensor(version, 0)
        body = json.dumps({**rel.offer, **changes}, separators=(",", ":")).encode()
        await self._publish(ota.topic(self.site, sensor, "offer"), body, qos=1)
        log.info("offered %s (%d bytes) to %s", version, rel.total, sensor)

    async def cancel(self, sensor: str) -> None:
        """Tell `sensor` to drop a staging in progress."""
        topics.check_id("sensor", sensor)
        await self._publish(ota.topic(self.site, sensor, "offer"), b'{"cancel":true}', qos=1)

    async def _publish(self, topic: str, payload: bytes, *, qos: int) -> None:
        """Publish once connected; over a dropped link, again once it is back."""
        link = self._link
        if link is None:
            raise ToolError(
                "the release server is not connected; use `async with server.connect(...)`"
            )
        while True:
            await link.ready.wait()
            client = link.client
            if client is not None:
                try:
                    await client.publish(topic, payload, qos=qos)
                    return
                except aiomqtt.MqttError as exc:
                    log.warning("publish to %s failed (%s); trying again", topic, exc)
            # the serving task notices a dropped link, clears `ready` and reconnects
            await asyncio.sleep(RETRY_S)

    # ---- answering the sensors --------------------------------------------------

    def answer(self, sensor: str, payload: bytes) -> list[bytes]:
        """The chunk messages for one `ota/get` of `sensor`; [] (and a count in
        `ignored`) for a get that is not served."""
        try:
            get = json.loads(payload)
        except ValueError:
            get = None
        if not isinstance(get, dict):
            return self._ignore("bad_request", sensor, payload)
        version, offset, length = (
            get.get("version"),
            _int(get.get("offset")),
            _int(get.get("length")),
        )
        rel = self.releases.get(version) if isinstance(version, str) else None
        if rel is None:
            return self._ignore("unknown_version", sensor, payload)
        if offset is None or not 0 <= offset <= rel.end:
            return self._ignore("bad_offset", sensor, payload)
        if length is None or not 0 < length <= ota.WINDOW:
            return self._ignore("bad_length", sensor, payload)
        state = self._sensors.setdefault(sensor, _Sensor())
        if state.version != version:
            state.version, state.served = version, 0
        state.served = max(state.served, min(offset + length, rel.end))
        self.gets[sensor] += 1
        return chunks_for(rel, offset, length)

    def _ignore(self, reason: str, sensor: str, payload: bytes) -> list[bytes]:
        self.ignored[reason] += 1
        log.info("ignored a get from %s (%s): %r", sensor, reason, payload[:80])
        return []

    async def _status(self, sensor: str, payload: bytes) -> None:
        if not payload:
            self.statuses.pop(sensor, None)  # its retained status was cleared
        else:
            try:
                status = payloads.decode_status(payload)
            except ProtocolError as exc:
                self.ignored["bad_status"] += 1
                log.info("ignored a status of %s: %s", sensor, exc)
                return
            self.statuses[sensor] = status
            for callback in self.on_status:
                try:
                    callback(sensor, status)
                except Exception:
                    # the sensors are still served; the caller's bug is in the log
                    log.exception("a status callback failed on the status of %s", sensor)
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = message.payload
        if not isinstance(payload, bytes | bytearray) or not topic.startswith(self._root):
            return
        sensor, _, leaf = topic[len(self._root) :].partition("/")
        if not topics.valid_id(sensor):
            self.ignored["bad_request"] += 1  # a client outside the id rules; no reply topic
            return
        if leaf == "status":
            await self._status(sensor, bytes(payload))
        elif leaf == "ota/get":
            for chunk in self.answer(sensor, bytes(payload)):
                await client.publish(ota.topic(self.site, sensor, "chunk"), chunk, qos=0)

    # ---- the connection ---------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connect(
        self,
        url: str,
        username: str | None = None,
        password: str | None = None,
        ca: str | Path | None = None,
    ) -> AsyncIterator[ReleaseServer]:
        """Serve while the block runs (see the module's docstring)."""
        try:
            address = parse_broker_url(url)
            tls = address.tls_context(None if ca is None else str(ca))
        except (ValueError, OSError, ssl.SSLError) as exc:
            raise UsageError(f"broker {url}: {exc}") from None
        link = _Link(
            url,
            address.host,
            address.port,
            tls,
            username,
            password,
            f"hushlight-ota-{self.site}-{secrets.token_hex(4)}",
        )
        try:
            first = await self._open(link)
        except aiomqtt.MqttError as exc:
            raise ToolError(
                f"cannot connect to the broker {url}: {exc}; check the URL, the account and "
                "that the broker runs"
            ) from None
        self._link = link
        # One task, owned by this block and ended with it (a TaskGroup here would
        # wrap an error of the caller's block into an ExceptionGroup).
        task = asyncio.create_task(self._serve(link, first), name=f"ota-serve-{self.site}")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._link = None

    async def _open(self, link: _Link) -> aiomqtt.Client:
        client = aiomqtt.Client(
            link.host,
            link.port,
            identifier=link.identifier,
            clean_session=True,
            username=link.username,
            password=link.password,
            tls_context=link.tls,
        )
        await client.__aenter__()
        try:
            await client.subscribe(self._root + "+/ota/get", qos=0)
            await client.subscribe(topics.sensors_wildcard(self.site, "status"), qos=1)
        except BaseException:
            await client.__aexit__(None, None, None)
            raise
        return client

    async def _serve(self, link: _Link, first: aiomqtt.Client) -> None:
        backoff = Backoff()
        client: aiomqtt.Client | None = first
        while True:
            try:
                if client is None:
                    client = await self._open(link)
                    log.info("reconnected to %s", link.url)
                backoff.reset()
                self.connections += 1
                link.client = client
                link.ready.set()
                async for message in client.messages:
                    await self._handle(client, message)
            except aiomqtt.MqttError as exc:
                log.warning("broker %s: %s; reconnecting", link.url, exc)
            finally:
                link.ready.clear()
                link.client = None
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.__aexit__(None, None, None)
                client = None
            await asyncio.sleep(backoff.next())
