"""1,000 malformed or hostile messages through a real broker: the gateway counts each one,
stays up, and still nudges on the genuine loud record hidden among them."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import aiohttp

from gateway.clock import ScaledClock
from gateway.config import load_config
from gateway.metrics import UNKNOWN
from gateway.service import Gateway
from protocol import payloads, topics
from protocol.errors import ProtocolError
from tests.gateway.conftest import SITE, TOKEN, Sensors, mqtt_client, wait_for, write_config
from tools.broker import Mosquitto, free_port

ROOT = f"hushlight/v1/{SITE}"


def hostile_payloads(rng: random.Random, good: bytes) -> list[bytes]:
    """Level payloads that break the contract in every way we could think of."""
    obj = json.loads(good)
    out: list[bytes] = [
        b"",
        b"\x00\xff\xfe garbage",
        b"{",
        good[:-1],  # truncated
        b"[" * 1020 + b"]" * 1020,  # deep nesting
        b"x" * 100_000,  # huge
        b"null",
        b"[]",
        b'"levels"',
        good.replace(b"{", b"{\n  ", 1) + b" trailing",
    ]
    for field in obj:
        for bad in ("NaN", "Infinity", "-Infinity", '"70"', "true", "null", "[]", "{}", "1e400",
                    "-1", "18446744073709551616"):  # fmt: skip
            out.append(json.dumps({**obj, field: "@"}).replace('"@"', bad).encode())
        missing = dict(obj)
        del missing[field]
        out.append(json.dumps(missing).encode())
    out.append(json.dumps({**obj, "t0": obj["t1"] + 1000}).encode())  # ends before it starts
    out.append(json.dumps({**obj, "flags": ["clipped", "clipped"]}).encode())
    out.append(json.dumps({**obj, "flags": ["on-fire"]}).encode())
    while len(out) < 400:  # random byte flips of a valid record
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        out.append(bytes(b))
    return out


def expected_reason(payload: bytes) -> str | None:
    """What protocol/ says about a payload, independently of the gateway."""
    try:
        payloads.decode("levels", payload)
    except ProtocolError as exc:
        return exc.reason
    return None


async def test_hostile_flood_is_counted_and_survived(
    tmp_path: Path, fresh_broker: Mosquitto
) -> None:
    clock = ScaledClock(origin=1_750_000_000.0, scale=1.0)
    port = free_port()
    cfg = load_config(write_config(tmp_path, fresh_broker.url, http_port=port))
    gw = Gateway(cfg, clock=clock, install_signals=False)
    task = asyncio.create_task(gw.run())
    rng = random.Random(4)
    nudges: list[bytes] = []
    async with mqtt_client(fresh_broker.port) as pub, mqtt_client(fresh_broker.port) as watch:
        await asyncio.wait_for(gw.ready.wait(), 10)
        await watch.subscribe(f"{ROOT}/zones/+/nudge", qos=1)
        sensors = Sensors(pub, clock)

        async def watcher() -> None:
            async for m in watch.messages:
                assert isinstance(m.payload, bytes)
                nudges.append(m.payload)

        watching = asyncio.create_task(watcher())
        expected: dict[tuple[str, str], int] = {}
        sent: list[tuple[str, bytes]] = []

        def expect(reason: str, sensor: str) -> None:
            expected[(reason, sensor)] = expected.get((reason, sensor), 0) + 1

        # 1. payloads that break the contract, from a configured sensor
        for p in hostile_payloads(rng, sensors.record("s2", 55.0)):
            reason = expected_reason(p)
            if reason is None:
                continue  # a byte flip that still makes a valid record (e.g. another digit)
            sent.append((topics.levels(SITE, "s2"), p))
            expect(reason, "s2")
        # 2. valid records from sensors no zone lists, and strays on wrong topics
        for i in range(200):
            sent.append((topics.levels(SITE, f"intruder-{i}"), sensors.record("s2", 99.0)))
            expect("unknown_sensor", UNKNOWN)
        for i, topic in enumerate(
            [f"{ROOT}/sensors/s1/levels/x", f"{ROOT}/sensors/S1/levels", f"{ROOT}/sensors/s1/lvl"]
            * 50
        ):
            sent.append((topic, sensors.record("s3", 99.0 + i % 2)))
            expect("bad_id" if "/S1/" in topic else "unknown_topic", UNKNOWN)
        # 3. status and light-state junk
        for body in (b'{"state":"asleep"}', b'{"state":"online"}', b"[]") * 10:
            sent.append((topics.status(SITE, "s3"), body))
            expect(expected_reason_of("status", body), "s3")
        for body in (b'{"level":500,"source":"override"}', b'{"source":"x","level":1}') * 10:
            sent.append((topics.light_state(SITE, "g1"), body))
            expect(expected_reason_of("light_state", body), UNKNOWN)
        # 4. replays of genuine records (quiet ones, sent once for real first)
        genuine = [sensors.record("s3", 50.0) for _ in range(10)]
        replays = [(topics.levels(SITE, "s3"), g) for g in genuine for _ in range(10)]
        hostile = len(sent) + len(replays)
        n_budget = 1000 - hostile
        assert n_budget >= 0, f"{hostile} hostile messages, more than the 1,000 planned"
        # pad up to exactly 1,000 with more unknown-sensor records
        for i in range(n_budget):
            sent.append((topics.levels(SITE, f"pad-{i}"), sensors.record("s2", 40.0)))
            expect("unknown_sensor", UNKNOWN)
        rng.shuffle(sent)

        for g in genuine:
            await pub.publish(topics.levels(SITE, "s3"), g, qos=1)
        half = len(sent) // 2
        for topic, body in sent[:half] + replays:
            await pub.publish(topic, body, qos=1)
        # the one genuine loud record, in the middle of the flood
        await sensors.send("s1", 86.0)
        for topic, body in sent[half:]:
            await pub.publish(topic, body, qos=1)

        total = len(sent) + len(replays)
        assert total == 1000
        m = gw.metrics
        await wait_for(
            lambda: m.rejects.total() + m.duplicates.total() >= total, 20.0, "every message counted"
        )
        await wait_for(lambda: nudges, 5.0, "the nudge for the genuine loud record")

        assert not task.done()  # still running
        got = {k: int(v) for k, v in m.rejects.values.items()}
        assert got == expected
        assert m.duplicates.get("s3") == len(replays)
        assert m.records_accepted.get("s3") == len(genuine)
        assert m.records_accepted.get("s1") == 1
        assert m.worker_errors.total() == 0 and m.queue_dropped.total() == 0
        assert len(nudges) == 1 and json.loads(nudges[0])["zone"] == "main"

        # and the operator sees the same figures in /metrics
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as r,
        ):
            text = await r.text()
        unknown = expected[("unknown_sensor", UNKNOWN)]
        assert (
            f'hushlight_rejects_total{{reason="unknown_sensor",sensor="{UNKNOWN}"}} {unknown}'
            in text
        )
        assert f'hushlight_duplicates_total{{sensor="s3"}} {len(replays)}' in text

        watching.cancel()
    gw.stop()
    await asyncio.wait_for(task, 10)


def expected_reason_of(kind: str, body: bytes) -> str:
    try:
        payloads.decode(kind, body)
    except ProtocolError as exc:
        return exc.reason
    raise AssertionError(f"{body!r} is a valid {kind}")
