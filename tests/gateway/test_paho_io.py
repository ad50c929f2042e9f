"""The tuned MQTT socket work: every message once, every one acknowledged, on a real Mosquitto."""

from __future__ import annotations

import ast
import asyncio
import collections
import importlib.metadata
import inspect
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
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


_KIND_CHECKS: dict[str, Callable[[object], bool]] = {
    "socket": lambda v: isinstance(v, socket.socket),
    "int": lambda v: isinstance(v, int),
    "bool": lambda v: isinstance(v, bool),
    "dict": lambda v: isinstance(v, dict),
    "float": lambda v: isinstance(v, float),
    "bytes": lambda v: isinstance(v, bytes),
    "lock": lambda v: isinstance(v, type(threading.Lock())),
    "method": inspect.ismethod,
    "paho client": lambda v: isinstance(v, paho.Client),
}


def _pinned(package: str) -> str:
    for line in (Path(__file__).parents[2] / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.split(";")[0].strip()
    raise AssertionError(f"{package} is not pinned in constraints.txt")


async def test_every_paho_private_the_read_path_uses_is_there_as_listed(broker: Mosquitto) -> None:
    """The installed paho-mqtt is the pinned one and has each private part that
    `PahoReadPath.PRIVATES` lists, of the kind and with the parameters listed."""
    assert importlib.metadata.version("paho-mqtt") == _pinned("paho-mqtt")
    assert importlib.metadata.version("aiomqtt") == _pinned("aiomqtt")
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="paho-io-privates") as client:
        for name, kind in paho_io.PahoReadPath.AIOMQTT_PRIVATES.items():
            assert _KIND_CHECKS[kind](getattr(client, name, None)), name
        mq = client._client
        for name, (kind, params) in paho_io.PahoReadPath.PRIVATES.items():
            value: Any = getattr(mq, name, None)
            assert _KIND_CHECKS[kind](value), f"paho Client.{name} is not a {kind}: {value!r}"
            if kind == "method":
                assert tuple(inspect.signature(value).parameters) == params, name
        # between packets paho's packet in progress says command 0
        assert mq._in_packet["command"] == 0
        message = paho.MQTTMessage(topic=b"a/b")
        for name, kind in paho_io.PahoReadPath.MESSAGE_PRIVATES.items():
            assert _KIND_CHECKS[kind](getattr(message, name, None)), name
        # what replaces a paho method takes what paho passes to it
        sock: Any = mq._sock
        path = paho_io.PahoReadPath(mq, sock, lambda topic, payload: None)
        for name in ("_sock_recv", "_send_puback", "_handle_on_message", "loop_read"):
            ours = inspect.signature(getattr(path, name.lstrip("_")))
            assert tuple(ours.parameters) == paho_io.PahoReadPath.PRIVATES[name][1], name
        assert paho_io.PahoReadPath.fits(mq)


def test_the_list_of_privates_names_every_private_the_module_touches() -> None:
    # any `mq.<name>` (the paho client), `message._x` or `client._x` in gateway/paho_io.py
    tree = ast.parse(inspect.getsource(paho_io))
    touched: dict[str, set[str]] = {"mq": set(), "message": set(), "client": set()}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = node.value
            if isinstance(owner, ast.Attribute) and owner.attr == "mq":
                touched["mq"].add(node.attr)  # self.mq.<name>
            elif isinstance(owner, ast.Name) and owner.id in touched:
                touched[owner.id].add(node.attr)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == "mq"
            and isinstance(node.args[1], ast.Constant)
        ):
            touched["mq"].add(str(node.args[1].value))
    assert touched["mq"], "the scan must see the paho client's attributes"
    assert touched["mq"] <= set(paho_io.PahoReadPath.PRIVATES), touched["mq"] - set(
        paho_io.PahoReadPath.PRIVATES
    )
    assert {n for n in touched["message"] if n.startswith("_")} <= set(
        paho_io.PahoReadPath.MESSAGE_PRIVATES
    )
    assert {n for n in touched["client"] if n.startswith("_")} <= set(
        paho_io.PahoReadPath.AIOMQTT_PRIVATES
    )
