"""The demo's embedded broker: what the sensors and the gateway rely on works on it."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator

import aiomqtt
import pytest

from tools.embedded_broker import BrokerProcess


@pytest.fixture(scope="module")
def amqtt_broker() -> Iterator[BrokerProcess]:
    with BrokerProcess() as broker:
        yield broker


def _mqtt_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _connect_with_will(port: int, client_id: str, will_topic: str, will: bytes) -> socket.socket:
    """A raw MQTT 3.1.1 CONNECT (section 3.1) with a retained QoS 1 will; the CONNACK read."""
    flags = 0x02 | 0x04 | (1 << 3) | 0x20  # clean session, will, will QoS 1, will retain
    body = _mqtt_string("MQTT") + bytes([4, flags]) + struct.pack("!H", 60)
    body += _mqtt_string(client_id) + _mqtt_string(will_topic)
    body += struct.pack("!H", len(will)) + will
    assert len(body) < 128  # one-byte remaining length
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(bytes([0x10, len(body)]) + body)
    connack = sock.recv(4)
    assert connack == b"\x20\x02\x00\x00", connack
    return sock


async def _first(client: aiomqtt.Client, topic: str) -> aiomqtt.Message:
    # amqtt 0.12 may also hand a new subscriber retained messages of other
    # topics (under their own, right topic): harmless to the gateway, which
    # routes by topic, so only the topic of interest is awaited.
    async with asyncio.timeout(10):
        async for message in client.messages:
            if message.topic.matches(topic):
                return message
    raise AssertionError("no message")


async def test_retained_and_qos1(amqtt_broker: BrokerProcess) -> None:
    async with aiomqtt.Client("127.0.0.1", amqtt_broker.port, identifier="pub") as pub:
        await pub.publish("hushlight/v1/demo/sensors/ns-01/status", b'{"state":"online"}', 1, True)
    async with aiomqtt.Client("127.0.0.1", amqtt_broker.port, identifier="sub") as sub:
        await sub.subscribe("hushlight/v1/demo/sensors/+/status", qos=1)
        message = await _first(sub, "hushlight/v1/demo/sensors/+/status")
        assert message.retain
        assert message.payload == b'{"state":"online"}'


async def test_last_will_on_a_dropped_connection(amqtt_broker: BrokerProcess) -> None:
    topic = "hushlight/v1/will/sensors/ns-02/status"
    async with aiomqtt.Client("127.0.0.1", amqtt_broker.port, identifier="watch") as watch:
        await watch.subscribe(topic, qos=1)
        sock = _connect_with_will(amqtt_broker.port, "ns-02", topic, b'{"state":"offline"}')
        sock.close()  # no DISCONNECT: the broker must publish the will
        message = await _first(watch, topic)
        assert message.payload == b'{"state":"offline"}', (message.topic, message.retain)


def test_second_broker_on_a_taken_port(amqtt_broker: BrokerProcess) -> None:
    from tools.errors import ToolError

    with pytest.raises(ToolError, match=str(amqtt_broker.port)):
        BrokerProcess(amqtt_broker.port).start(timeout=5)
