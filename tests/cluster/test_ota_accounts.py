"""Updates over the air through the RabbitMQ cluster, with the accounts that
`hushlight provision` writes (tools/rabbit_accounts.py): the roll-out account
serves a release (tools/ota_serve.py) to a sensor account on another node."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt

from protocol import ota, topics
from tests.cluster.conftest import SITE, Cluster
from tests.cluster.test_rabbit_cluster import Link, provision
from tools import cli
from tools.ota_serve import Release, ReleaseServer


def _operator(rabbit: Cluster, tmp_path: Path) -> str:
    defs, secret = tmp_path / "operator.json", tmp_path / "ops.password"
    argv = ["provision", "--operator", "ops", "--site", SITE, "--out", str(secret)]
    assert cli.main([*argv, "--rabbit-defs", str(defs)]) == 0
    load = ["cluster", "load", "--dir", str(rabbit.nodes.dir), "--definitions", str(defs)]
    assert cli.main(load) == 0
    return secret.read_text().strip()


async def test_the_operator_serves_a_release_to_a_sensor_on_another_node(
    rabbit: Cluster, tmp_path: Path
) -> None:
    config = provision(rabbit, tmp_path, "ns-41")
    password = _operator(rabbit, tmp_path)
    rel = Release("0.2.0", {"version": "0.2.0"}, bytes(range(256)) * 10)
    server = ReleaseServer(SITE, [rel])
    host, port = rabbit.nodes.urls[1].split("://", 1)[1].rsplit(":", 1)
    sensor = aiomqtt.Client(
        host,
        int(port),
        identifier=f"{SITE}-ns-41",
        username=config["mqtt_user"],
        password=config["mqtt_password"],
    )
    async with (
        server.connect(rabbit.nodes.urls[0], "ops", password),
        sensor,
        asyncio.timeout(30),
    ):
        await sensor.subscribe(ota.topic(SITE, "ns-41", "offer"), qos=1)
        await sensor.subscribe(ota.topic(SITE, "ns-41", "chunk"), qos=1)
        await server.offer("ns-41", "0.2.0")
        messages = sensor.messages.__aiter__()
        assert json.loads((await anext(messages)).payload) == rel.offer  # type: ignore[arg-type]
        get = {"version": "0.2.0", "offset": 0, "length": ota.WINDOW}
        await sensor.publish(ota.topic(SITE, "ns-41", "get"), json.dumps(get), qos=0)
        got = b""
        while True:
            payload = (await anext(messages)).payload
            assert isinstance(payload, bytes) and ota.chunk_offset(payload) == len(got)
            if len(payload) == 4:
                break
            got += payload[4:]
    assert got == rel.data
    assert server.ignored == {}


def test_the_operator_may_not_configure_sensors_nor_a_sensor_offer_releases(
    rabbit: Cluster, tmp_path: Path
) -> None:
    config = provision(rabbit, tmp_path, "ns-42")
    password = _operator(rabbit, tmp_path)
    url = rabbit.nodes.urls[2]

    def operator() -> Link:
        return Link(url, "ops", password, client_id=f"hushlight-ota-{SITE}-0a1b2c3d")

    def sensor() -> Link:
        return Link(url, config["mqtt_user"], config["mqtt_password"], client_id=f"{SITE}-ns-42")

    ops = operator()
    assert ops.subscribe(f"{topics.root(SITE)}/sensors/+/ota/get") == [1]
    ops.client.publish(topics.config(SITE, "ns-42"), b'{"rev":1}', qos=1)
    assert ops.refused()
    ops.close()
    device = sensor()
    device.client.publish(ota.topic(SITE, "ns-42", "offer"), b"{}", qos=1)
    assert device.refused()
    device.close()
    device = sensor()
    device.client.subscribe(ota.topic(SITE, "ns-41", "chunk"), 1)
    assert device.refused()
    device.close()
