"""The release server (tools/ota_serve.py): what it answers to a get, and a
whole release fetched through a real Mosquitto as a sensor fetches it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from protocol import ota, payloads, topics
from tools import release
from tools.broker import Mosquitto
from tools.ota_serve import Release, ReleaseServer, chunks_for

SITE = "leuven"
ONLINE = {
    "fw": "0.1.0",
    "uptime_s": 5,
    "free_mem": 21000,
    "dsp_load": 0.1,
    "buffered": 0,
    "calibration_offset_db": 0,
}


def _release(size: int, end: int | None = None) -> Release:
    data = bytes(i * 7 % 251 for i in range(size))
    return Release("0.2.0", {"version": "0.2.0"}, data, size if end is None else end)


def _parts(messages: list[bytes]) -> list[tuple[int, bytes]]:
    return [(ota.chunk_offset(m), m[4:]) for m in messages]


def test_a_get_is_answered_with_chunks_of_its_range() -> None:
    rel = _release(3 * ota.WINDOW + 100)
    parts = _parts(chunks_for(rel, ota.WINDOW, ota.WINDOW))
    assert [o for o, _ in parts] == [ota.WINDOW + i * ota.CHUNK for i in range(4)]
    assert b"".join(d for _, d in parts) == rel.data[ota.WINDOW : 2 * ota.WINDOW]
    # the last window: the rest, then the empty chunk that marks the end
    last = _parts(chunks_for(rel, 3 * ota.WINDOW, ota.WINDOW))
    assert last == [(3 * ota.WINDOW, rel.data[-100:]), (rel.total, b"")]
    # asked at the end itself: only the end
    assert _parts(chunks_for(rel, rel.total, 10)) == [(rel.total, b"")]


def test_a_truncated_release_ends_early() -> None:
    rel = _release(5000, end=1500)
    parts = _parts(chunks_for(rel, 1024, ota.WINDOW))
    assert parts == [(1024, rel.data[1024:1500]), (1500, b"")]


@pytest.mark.parametrize(
    ("get", "reason"),
    [
        (b"not json", "bad_request"),
        (b"[1]", "bad_request"),
        (b'{"version": "0.3.0", "offset": 0, "length": 4096}', "unknown_version"),
        (b'{"version": "0.2.0", "offset": 9000, "length": 4096}', "bad_offset"),
        (b'{"version": "0.2.0", "offset": -1, "length": 4096}', "bad_offset"),
        (b'{"version": "0.2.0", "offset": true, "length": 4096}', "bad_offset"),
        (b'{"version": "0.2.0", "offset": 0, "length": 4097}', "bad_length"),
        (b'{"version": "0.2.0", "offset": 0, "length": 0}', "bad_length"),
    ],
)
def test_a_get_that_is_not_served_is_counted(get: bytes, reason: str) -> None:
    server = ReleaseServer(SITE, [_release(8000)])
    assert server.answer("ns-01", get) == []
    assert server.ignored == {reason: 1}
    assert server.progress("ns-01") == (0, 0)
    good = b'{"version": "0.2.0", "offset": 0, "length": 4096}'
    assert len(server.answer("ns-01", good)) == 4
    assert server.progress("ns-01") == (4096, 8000)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[release.Bundle, Path]:
    keys = tmp_path_factory.mktemp("keys")
    private, public = release.generate_key(keys, 2048)
    path = release.build_release(
        private, "0.2.0", tmp_path_factory.mktemp("rel"), to=release.target("device")
    )
    return release.check_bundle(path, public), public


async def _fetch(
    client: aiomqtt.Client, sensor: str, version: str, messages: asyncio.Queue[bytes]
) -> bytes:
    """The release as a sensor fetches it: a window at a time until the end chunk."""
    got = bytearray()
    while True:
        get = {"version": version, "offset": len(got), "length": ota.WINDOW}
        await client.publish(ota.topic(SITE, sensor, "get"), json.dumps(get), qos=0)
        while True:
            msg = await messages.get()
            offset, data = ota.chunk_offset(msg), msg[4:]
            assert offset == len(got)
            if not data:
                return bytes(got)
            got += data
            if len(got) % ota.WINDOW == 0:
                break


async def test_a_sensor_fetches_the_whole_release_through_mosquitto(
    broker: Mosquitto, bundle: tuple[release.Bundle, Path]
) -> None:
    b, public = bundle
    sensor = "ota-serve-1"
    server = ReleaseServer(SITE, [b.path], pub=public)
    offers: asyncio.Queue[bytes] = asyncio.Queue()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    async with (
        aiomqtt.Client("127.0.0.1", broker.port, identifier=f"{SITE}-{sensor}") as fake,
        server.connect(broker.url),
    ):
        await fake.subscribe(ota.topic(SITE, sensor, "offer"), qos=1)
        await fake.subscribe(ota.topic(SITE, sensor, "chunk"), qos=0)

        async def route() -> None:
            async for m in fake.messages:
                assert isinstance(m.payload, bytes)
                queue = offers if m.topic.value.endswith("/offer") else chunks
                queue.put_nowait(m.payload)

        async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
            router = tg.create_task(route())
            await server.offer(sensor, "0.2.0")
            offer = json.loads(await offers.get())
            assert offer == {
                "version": "0.2.0",
                "size": len(b.manifest),
                "total": b.total,
                "sig": base64.b64encode(b.sig).decode(),
            }
            # a get for a version the server does not hold goes unanswered
            bad = {"version": "9.9.9", "offset": 0, "length": ota.WINDOW}
            await fake.publish(ota.topic(SITE, sensor, "get"), json.dumps(bad), qos=0)
            data = await _fetch(fake, sensor, "0.2.0", chunks)
            router.cancel()
    assert hashlib.sha256(data).digest() == hashlib.sha256(b.release_bytes()).digest()
    assert data[: offer["size"]] == b.manifest
    assert server.progress(sensor) == (b.total, b.total)
    assert server.ignored == {"unknown_version": 1}
    assert server.gets[sensor] == -(-b.total // ota.WINDOW)


async def test_statuses_are_followed_and_wake_a_waiter(broker: Mosquitto) -> None:
    sensor = "ota-serve-2"
    server = ReleaseServer(SITE, [_release(100)])
    seen: list[tuple[str, str | None]] = []
    server.on_status.append(lambda s, st: seen.append((s, st.get("ota"))))
    status_topic = topics.status(SITE, sensor)
    async with (
        aiomqtt.Client("127.0.0.1", broker.port, identifier=f"{SITE}-{sensor}") as fake,
        server.connect(broker.url),
    ):
        async with asyncio.timeout(20):
            for state in ("staging", "refused"):
                body = payloads.encode_status(
                    "online",
                    **ONLINE,
                    ota=state,
                    ota_version="0.2.0",
                    ota_reason="downgrade",
                )
                await fake.publish(status_topic, body, qos=1, retain=True)
                await server.wait_until(lambda st=state: server.ota_state(sensor) == st)
            await fake.publish(status_topic, b"not a status", qos=1, retain=True)
            await fake.publish(status_topic, b"", qos=1, retain=True)  # cleared
            await server.wait_until(lambda: sensor not in server.statuses)
    assert (sensor, "staging") in seen and seen[-1] == (sensor, "refused")
    assert server.ignored == {"bad_status": 1}


async def test_the_server_reconnects_and_an_offer_waits_for_the_link(
    fresh_broker: Mosquitto,
) -> None:
    sensor = "ota-serve-3"
    rel = _release(3000)
    server = ReleaseServer(SITE, [rel])
    async with server.connect(fresh_broker.url), asyncio.timeout(30):
        fresh_broker.restart()  # the server's connection drops
        async with aiomqtt.Client("127.0.0.1", fresh_broker.port) as fake:
            await fake.subscribe(ota.topic(SITE, sensor, "offer"), qos=1)
            await fake.subscribe(ota.topic(SITE, sensor, "chunk"), qos=0)
            await server.offer(sensor, "0.2.0")
            messages = aiomqtt_messages(fake)
            assert json.loads(await anext(messages)) == rel.offer
            # subscribed again after the reconnection: a get is answered
            get = {"version": "0.2.0", "offset": 2048, "length": ota.WINDOW}
            # a get on a topic no sensor may have goes unanswered, and serving goes on
            bad_topic = f"{topics.root(SITE)}/sensors/NS_1/ota/get"
            await fake.publish(bad_topic, json.dumps(get), qos=0)
            await fake.publish(ota.topic(SITE, sensor, "get"), json.dumps(get), qos=0)
            parts = [ota.chunk_offset(await anext(messages)) for _ in range(2)]
    assert parts == [2048, 3000]
    assert server.progress(sensor) == (3000, 3000)
    assert server.connections == 2
    assert server.ignored == {"bad_request": 1}


async def aiomqtt_messages(client: aiomqtt.Client) -> AsyncIterator[bytes]:
    async for message in client.messages:
        assert isinstance(message.payload, bytes)
        yield message.payload


async def test_a_broker_that_cannot_be_reached_is_named() -> None:
    from tools.broker import free_port
    from tools.errors import ToolError, UsageError

    server = ReleaseServer(SITE, [_release(10)])
    url = f"mqtt://127.0.0.1:{free_port()}"
    with pytest.raises(ToolError, match=re.escape(f"cannot connect to the broker {url}")):
        async with server.connect(url):
            pass
    with pytest.raises(UsageError, match=re.escape("release 0.3.0 is not served here")):
        await server.offer("ns-01", "0.3.0")
