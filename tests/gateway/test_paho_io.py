"""The tuned MQTT socket work: every message once, every one acknowledged, on a real Mosquitto."""

from __future__ import annotations

import asyncio
import collections
import ssl
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway import paho_io
from tests.firmware.conftest import make_ca
from tests.gateway.conftest import wait_for
from tools.broker import Mosquitto

TOPIC = "paho-io/test"


def _payloads() -> list[bytes]:
    # small records in bursts (many packets per socket read, a packet cut at the
    # end of a read) and a few larger than one read of the buffer
    out = [b"record %05d " % i + b"x" * (i % 300) for i in range(1500)]
    for i in range(3):
        out.insert(
            500 * i + 7, b"big %d " % i + bytes(range(256)) * (1 + 2 * paho_io.READ_SIZE // 256)
        )
    return out


@pytest.mark.parametrize("direct", [False, True], ids=["aiomqtt-queue", "deliver"])
async def test_every_message_arrives_once_and_is_acknowledged(
    broker: Mosquitto, direct: bool
) -> None:
    sent = _payloads()
    got: list[bytes] = []
    topics: set[str] = set()

    def deliver(topic: str, payload: bytes) -> None:
        topics.add(topic)
        got.append(payload)

    async def take(client: aiomqtt.Client, into: list[bytes]) -> None:
        async for m in client.messages:
            assert isinstance(m.payload, bytes)
            into.append(m.payload)

    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier="paho-io-sub", clean_session=False
    ) as sub:
        assert paho_io.tune(sub, deliver if direct else None)
        await sub.subscribe(TOPIC, qos=1)
        reader = asyncio.create_task(take(sub, [] if direct else got))
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="paho-io-pub") as pub:
            # bursts of concurrent publishes, so the broker writes many packets back to back
            for i in range(0, len(sent), 100):
                await asyncio.gather(*(pub.publish(TOPIC, p, qos=1) for p in sent[i : i + 100]))
        await wait_for(lambda: len(got) >= len(sent), 30, f"{len(sent)} messages")
        reader.cancel()
    assert collections.Counter(got) == collections.Counter(sent)
    assert len(got) == len(sent)
    assert topics == ({TOPIC} if direct else set())

    # Unacknowledged QoS 1 messages are delivered again on reconnection,
    # before anything new: a marker published now must be the only arrival.
    again: list[bytes] = []
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier="paho-io-sub", clean_session=False
    ) as sub:
        reader = asyncio.create_task(take(sub, again))
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="paho-io-pub") as pub:
            await pub.publish(TOPIC, b"marker", qos=1)
        await wait_for(lambda: b"marker" in again, 10, "the marker")
        reader.cancel()
        await sub.unsubscribe(TOPIC)
    assert again == [b"marker"]


async def test_mqtt5_clients_are_left_alone(broker: Mosquitto) -> None:
    # MQTT 5 PUBACKs may carry reason codes and properties: paho builds those itself
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier="paho-io-v5", protocol=aiomqtt.ProtocolVersion.V5
    ) as v5:
        assert not paho_io.tune(v5)


async def test_publishes_are_cut_from_the_read_and_the_rest_is_left_to_paho(
    broker: Mosquitto,
) -> None:
    """QoS 0 and 1, retained, long topics and names beyond ASCII: delivered whole and in
    order, without paho's packet handling."""
    topic_a = "paho-io/fast/straße"  # not ASCII: the topic is UTF-8 on the wire
    topic_b = "paho-io/fast/" + "t" * 300  # a topic longer than one length byte says
    sent = [(topic_a if i % 2 else topic_b, b"%05d" % i, i % 3 % 2) for i in range(2000)]
    big = b"B" * (2 * paho_io.READ_SIZE)
    got: list[tuple[str, bytes]] = []
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier="paho-io-fast", clean_session=True
    ) as sub:
        mq = sub._client
        handled = 0
        publish = mq._handle_publish

        def counted() -> object:
            nonlocal handled
            handled += 1
            return publish()

        mq._handle_publish = counted
        assert paho_io.tune(sub, lambda t, p: got.append((t, p)))
        await sub.subscribe("paho-io/fast/#", qos=1)
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="paho-io-fast-pub") as pub:
            await pub.publish(topic_a, b"retained", qos=1, retain=True)
            for i in range(0, len(sent), 200):
                # the subscriber's own publishes meanwhile: their PUBACKs come in between
                # the PUBLISH packets, and paho must still see each of them
                await asyncio.gather(
                    *(pub.publish(t, p, qos=q) for t, p, q in sent[i : i + 200]),
                    *(sub.publish("paho-io/elsewhere", b"x", qos=1) for _ in range(20)),
                )
            await pub.publish(topic_a, big, qos=1)
        await wait_for(lambda: len(got) >= len(sent) + 2, 30, "every message")
    qos_of = {p: q for _, p, q in sent}
    for name in (topic_a, topic_b):
        for qos in (0, 1):  # MQTT keeps the order per topic and QoS, not across QoS levels
            assert [p for t, p in got if t == name and qos_of.get(p) == qos] == [
                p for t, p, q in sent if t == name and q == qos
            ]
    assert (topic_a, b"retained") in got and (topic_a, big) in got
    assert len(got) == len(sent) + 2
    # paho handled none of them: packets cut by a read, and the one larger than a
    # read, are put together in the buffer and cut out of it like the others
    assert handled == 0, handled


async def test_over_tls_every_message_arrives_once_through_the_tuned_reader(
    tmp_path: Path,
) -> None:
    """The same reads over TLS: records cut across TLS records and reads, big ones, bursts."""
    tls = make_ca(tmp_path / "tls", "hushlight test CA")
    sent = _payloads()
    got: list[bytes] = []
    context = ssl.create_default_context(cafile=str(tls.ca))
    with Mosquitto(tls=(tls.ca, tls.cert, tls.key)) as tls_broker:
        assert tls_broker.tls_port is not None
        async with aiomqtt.Client(
            "127.0.0.1", tls_broker.tls_port, identifier="paho-io-tls", tls_context=context
        ) as sub:
            assert isinstance(sub._client._sock, ssl.SSLSocket)
            assert paho_io.tune(sub, lambda topic, payload: got.append(payload))
            await sub.subscribe(TOPIC, qos=1)
            async with aiomqtt.Client("127.0.0.1", tls_broker.port, identifier="pub") as pub:
                for i in range(0, len(sent), 100):
                    await asyncio.gather(*(pub.publish(TOPIC, p, qos=1) for p in sent[i : i + 100]))
            await wait_for(lambda: len(got) >= len(sent), 30, f"{len(sent)} messages")
            # and the last of a quiet link is not left behind in the TLS layer
            async with aiomqtt.Client("127.0.0.1", tls_broker.port, identifier="pub") as pub:
                await pub.publish(TOPIC, b"last", qos=1)
            await wait_for(lambda: got[-1:] == [b"last"], 5, "the last message")
    assert collections.Counter(got[:-1]) == collections.Counter(sent)


class _TlsWants:
    """A socket whose TLS layer has no whole record yet, or must write before reading."""

    def __init__(self, error: type[ssl.SSLError]) -> None:
        self.error = error

    def recv(self, bufsize: int) -> bytes:
        raise self.error()


@pytest.mark.parametrize("error", [ssl.SSLWantReadError, ssl.SSLWantWriteError])
def test_a_tls_read_that_must_wait_is_no_lost_connection(error: type[ssl.SSLError]) -> None:
    # paho takes any other OSError from a read for a lost connection
    wants_write: list[bool] = []
    stand_in: Any = _TlsWants(error)
    reader = paho_io._ReadBuffer(stand_in, lambda: wants_write.append(True))
    reader.budget = paho_io.READ_SIZE  # as at the start of a readable event
    with pytest.raises(BlockingIOError):
        reader.recv(1)
    assert wants_write == ([True] if error is ssl.SSLWantWriteError else [])
