"""gateway.outbox: publishes in order, a window in flight, each kept until acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.outbox import Outbox
from tests.gateway.conftest import SITE, collect, mqtt_client, wait_for
from tools.broker import Mosquitto

ROOT = f"hushlight/v1/{SITE}"


async def test_the_outbox_keeps_a_window_of_publishes_in_flight_in_order(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """An override never waits for the PUBACKs of the messages queued before it, one by one."""
    in_flight = most = 0

    class Counting(aiomqtt.Client):
        async def publish(self, *args: Any, **kwargs: Any) -> None:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                await super().publish(*args, **kwargs)
            finally:
                in_flight -= 1

    outbox = Outbox(window=5)
    for i in range(40):
        outbox.publish(f"{ROOT}/outbox-test/{i}", b"%d" % i)
    got: list[tuple[str, dict[str, Any]]] = []
    async with mqtt_client(broker.port) as watcher:
        await watcher.subscribe(f"{ROOT}/outbox-test/#", qos=1)
        watch = asyncio.create_task(collect(watcher, got))
        async with Counting("127.0.0.1", broker.port, identifier="outbox-test") as client:
            pump = asyncio.create_task(outbox.pump(client))
            await asyncio.wait_for(outbox.flushed(), 10)
            assert len(outbox) == 0  # each left only once the broker acknowledged it
            await wait_for(lambda: len(got) == 40, 10, "40 messages at the watcher")
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
    # in the order published (payload i on topic .../i)
    assert [(t.rsplit("/", 1)[1], json.dumps(p)) for t, p in got] == [
        (str(i), str(i)) for i in range(40)
    ]
    assert most == 5  # the whole window at once, never more
