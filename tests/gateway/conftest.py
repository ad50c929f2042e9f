"""Helpers of the gateway tests: a site configuration on disk and a few simulated sensors."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.clock import Clock
from protocol import payloads, topics
from tools.broker import free_port

SITE = "testsite"
TOKEN = "operator-token-0123456789"


def write_config(
    tmp_path: Path,
    broker_url: str,
    *,
    zone: dict[str, Any] | None = None,
    site: dict[str, Any] | None = None,
    webpush: dict[str, Any] | None = None,
    http_port: int | None = None,
    client_id: str = "",
    broker: dict[str, Any] | None = None,
) -> Path:
    """A site TOML with one zone "main" (sensors s1-s3, lights g1), always active."""
    z: dict[str, Any] = {
        "id": "main",
        "sensors": ["s1", "s2", "s3"],
        "light_groups": ["g1"],
        "schedule": ["00:00-24:00"],
        "threshold_db": 70.0,
        "trigger": "laeq",
        "window_s": 3,
        "min_sensors": 1,
        "nudge_level": 40,
        "programme_level": 80,
        "ramp_s": 1,
        "hold_s": 10,
        "max_hold_s": 600,
        "renew_before_s": 5,
        "floor_level": 20,
        "cooldown_s": 300,
        "max_nudges_per_hour": 3,
    }
    z.update(zone or {})
    s = {"id": SITE, "timezone": "Europe/Brussels", "stale_after_s": 30}
    s.update(site or {})
    lines = ["[site]", *_kv(s), "[broker]", *_kv({"url": broker_url, **(broker or {})})]
    if client_id:
        lines += _kv({"client_id": client_id})
    lines += ["[storage]", *_kv({"path": str(tmp_path / "gw.db")})]
    lines += ["[http]", *_kv({"port": http_port or free_port(), "token": TOKEN})]
    if webpush:
        lines += ["[webpush]", *_kv(webpush)]
    lines += ["[[zones]]", *_kv(z)]
    lines += [
        "[zones.messages]",
        *_kv({"en": "People are sleeping here.", "nl": "Hier slapen mensen."}),
    ]
    path = tmp_path / "site.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _kv(d: dict[str, Any]) -> list[str]:
    return [f"{k} = {json.dumps(v)}" for k, v in d.items()]


class Sensors:
    """Publishes level records the way the firmware does (QoS 1, seq +1 per record)."""

    def __init__(self, client: aiomqtt.Client, clock: Clock, site: str = SITE) -> None:
        self.client = client
        self.clock = clock
        self.site = site
        self.seq: dict[str, int] = {}

    def record(self, sensor: str, laeq: float, *, t1: float | None = None) -> bytes:
        end = self.clock.now() if t1 is None else t1
        seq = self.seq.get(sensor, 0)
        self.seq[sensor] = seq + 1
        t1_ms = int(end * 1000)
        return payloads.encode_levels(
            seq=seq, t0=t1_ms - 1000, t1=t1_ms, laeq=laeq, lafmax=laeq + 3, lceq=laeq + 5, flags=0
        )

    async def send(self, sensor: str, laeq: float, **kw: Any) -> None:
        await self.client.publish(
            topics.levels(self.site, sensor), self.record(sensor, laeq, **kw), qos=1
        )

    async def status(self, sensor: str, state: str) -> None:
        body = {"state": state}
        if state == "online":
            body.update(
                fw="1.0.0",
                uptime_s=5,
                free_mem=100000,
                dsp_load=0.1,
                buffered=0,
                calibration_offset_db=0.0,
            )
        await self.client.publish(
            topics.status(self.site, sensor), json.dumps(body).encode(), qos=1, retain=True
        )


@contextlib.asynccontextmanager
async def mqtt_client(port: int, **kw: Any) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client("127.0.0.1", port, **kw) as client:
        yield client


async def collect(client: aiomqtt.Client, into: list[tuple[str, dict[str, Any]]]) -> None:
    """Append (topic, JSON payload) of every message until cancelled."""
    async for m in client.messages:
        assert isinstance(m.payload, bytes)
        into.append((m.topic.value, json.loads(m.payload)))


async def wait_for(predicate: Any, limit: float, what: str) -> None:
    """Poll `predicate()` until true; fail naming `what` after `limit` wall seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"no {what} after {limit} s")
        await asyncio.sleep(0.02)
