"""firmware/hushlight/mqtt.py, run in the MicroPython unix port.

Two kinds of peer:

- `Wire`, a scripted TCP peer on loopback that stands in for the broker and
  checks the exact bytes the client sends.  The expected bytes are built
  here from the MQTT 3.1.1 specification (OASIS standard, 2014), section by
  section, not from the client's code.
- a real Mosquitto (the `broker` / `fresh_broker` fixtures), observed from
  CPython with paho-mqtt, for the behaviour end to end: QoS 1 acknowledged,
  retained config received, last will after SIGKILL, reconnect after a
  broker restart, TLS with a pinned CA.

The client runs in tests/firmware/upy/mqtt_driver.py, driven over
stdin/stdout with one JSON object per line (tests/firmware/mqtt_peers.py).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from tests.firmware.conftest import TlsFiles
from tests.firmware.mqtt_peers import (
    CONNACK_OK,
    WAIT,
    Driver,
    Drivers,
    Observer,
    Wire,
    connected_on_wire,
    observe,
    packet,
    start,
    unique,
    utf8_field,
)
from tools.broker import Mosquitto
from tools.embedded_broker import BrokerProcess
from tools.provision import hash_password


@pytest.fixture
def wire() -> Iterator[Wire]:
    w = Wire()
    yield w
    w.close()


@pytest.fixture
def drivers(tmp_path: Path) -> Iterator[Drivers]:
    started = Drivers(tmp_path)
    yield started
    for d in started:
        d.close()


@pytest.fixture
def observers() -> Iterator[list[Observer]]:
    made: list[Observer] = []
    yield made
    for o in made:
        o.close()


# ------------------------------------------------------------------ bytes on the wire


def test_connect_with_will_credentials_and_persistent_session(drivers: Drivers, wire: Wire) -> None:
    will = b'{"state":"offline"}'
    start(
        drivers,
        client_id="leuven-ns-01",
        port=wire.port,
        user="sensor",
        password="s3cret",
        keepalive=30,
        clean_session=False,
        will_topic="hushlight/v1/leuven/sensors/ns-01/status",
        will_payload=will.decode(),
        will_retain=True,
        will_qos=1,
    )
    wire.accept()
    # section 3.1.2: protocol name, level 4, connect flags, keepalive
    flags = 0x80 | 0x40 | 0x20 | (1 << 3) | 0x04  # user, password, will retain, will QoS 1, will
    variable = utf8_field(b"MQTT") + bytes([4, flags]) + (30).to_bytes(2, "big")
    # section 3.1.3: client id, will topic, will message, user name, password
    payload = (
        utf8_field(b"leuven-ns-01")
        + utf8_field(b"hushlight/v1/leuven/sensors/ns-01/status")
        + utf8_field(will)
        + utf8_field(b"sensor")
        + utf8_field(b"s3cret")
    )
    assert wire.read_packet() == packet(0x10, variable + payload)


def test_connect_minimal_clean_session(drivers: Drivers, wire: Wire) -> None:
    start(drivers, client_id="c", port=wire.port, keepalive=60, clean_session=True)
    wire.accept()
    expected = bytes(
        [0x10, 13, 0, 4, ord("M"), ord("Q"), ord("T"), ord("T"), 4, 0x02, 0, 60, 0, 1, ord("c")]
    )
    assert wire.read_packet() == expected


def test_publish_qos0_qos1_and_puback(drivers: Drivers, wire: Wire) -> None:
    d = connected_on_wire(drivers, wire)
    d.send(op="publish", topic="a/b", payload="hi", qos=0, retain=False)
    assert d.expect("published")["pid"] == 0
    # section 3.3: topic, no packet id at QoS 0
    assert wire.read_packet() == bytes([0x30, 7, 0, 3]) + b"a/b" + b"hi"

    d.send(op="publish", topic="a/b", payload="hi", qos=1, retain=True)
    e = d.expect("published")
    assert (e["pid"], e["inflight"]) == (1, 1)
    # QoS 1 (bits 2-1 = 01) and RETAIN (bit 0): 0x33; packet id 1 after the topic
    assert wire.read_packet() == bytes([0x33, 9, 0, 3]) + b"a/b" + bytes([0, 1]) + b"hi"
    wire.send(bytes([0x40, 2, 0, 1]))  # section 3.4 PUBACK for packet id 1
    d.expect("puback", pid=1)
    assert d.stats()["inflight"] == 0

    # a PUBACK for an id never sent is ignored
    wire.send(bytes([0x40, 2, 0x12, 0x34]))
    d.send(op="publish", topic="a/b", payload="hi", qos=1)
    assert d.expect("published")["pid"] == 2
    wire.read_packet()
    wire.send(bytes([0x40, 2, 0, 2]))
    d.expect("puback", pid=2)
    assert [e["pid"] for e in d.seen if e["ev"] == "puback"] == [1, 2]


def test_str_payload_goes_out_as_utf8(drivers: Drivers, wire: Wire) -> None:
    d = connected_on_wire(drivers, wire)
    d.send(op="publish", topic="t", payload="\u00e9\u20ac", as_str=True)
    d.expect("published")
    body = "\u00e9\u20ac".encode()  # 5 bytes for 2 characters
    assert wire.read_packet() == packet(0x30, utf8_field(b"t") + body)


@pytest.mark.parametrize(
    ("remaining", "header"),
    [
        # section 2.2.3, table 2.4: the boundaries of one, two and three length bytes
        (127, bytes([0x7F])),
        (128, bytes([0x80, 0x01])),
        (16383, bytes([0xFF, 0x7F])),
        (16384, bytes([0x80, 0x80, 0x01])),
    ],
)
def test_remaining_length_boundaries(
    drivers: Drivers, wire: Wire, remaining: int, header: bytes
) -> None:
    d = connected_on_wire(drivers, wire)
    fill = remaining - 3  # QoS 0: 2 length bytes + 1 topic byte + payload
    d.send(op="publish", topic="t", fill=fill, qos=0)
    d.expect("published")
    assert wire.read_packet() == bytes([0x30]) + header + b"\x00\x01t" + b"x" * fill


def test_subscribe_and_suback(drivers: Drivers, wire: Wire) -> None:
    d = connected_on_wire(drivers, wire)
    d.send(op="subscribe", topic="hushlight/v1/leuven/sensors/ns-01/config", qos=1)
    topic = b"hushlight/v1/leuven/sensors/ns-01/config"
    # section 3.8: fixed header 0x82, packet id, topic filter, requested QoS
    assert wire.read_packet() == packet(0x82, bytes([0, 1]) + utf8_field(topic) + bytes([1]))
    wire.send(bytes([0x90, 3, 0, 1, 1]))  # section 3.9: granted QoS 1
    assert d.expect("subscribed")["code"] == 1

    d.send(op="subscribe", topic="forbidden", qos=1)
    assert wire.read_packet()[0] == 0x82
    wire.send(bytes([0x90, 3, 0, 2, 0x80]))  # failure return code
    assert "refused the subscription" in d.expect("error", op="subscribe")["error"]


def test_incoming_publish_delivered_and_acknowledged(drivers: Drivers, wire: Wire) -> None:
    d = connected_on_wire(drivers, wire)
    # QoS 1, retained, packet id 0x0102
    wire.send(packet(0x33, utf8_field(b"cfg") + bytes([1, 2]) + b'{"rev":1}'))
    m = d.expect("message")
    assert (m["topic"], m["payload"], m["retained"]) == ("cfg", '{"rev":1}', True)
    assert wire.read_packet() == bytes([0x40, 2, 1, 2])
    # QoS 0, not retained: delivered, nothing sent back
    wire.send(packet(0x30, utf8_field(b"cfg") + b"{}"))
    m = d.expect("message", payload="{}")
    assert m["retained"] is False


def test_oversized_incoming_publish_is_dropped_but_acknowledged(
    drivers: Drivers, wire: Wire
) -> None:
    d = connected_on_wire(drivers, wire)
    big = b"y" * 16384  # far beyond the client's receive buffer
    wire.send(packet(0x32, utf8_field(b"cfg") + bytes([0, 9]) + big))
    # acknowledged, or the broker would redeliver it forever
    assert wire.read_packet() == bytes([0x40, 2, 0, 9])
    # and the link still works: the next message arrives whole
    wire.send(packet(0x32, utf8_field(b"cfg") + bytes([0, 10]) + b"ok"))
    assert d.expect("message")["payload"] == "ok"
    assert wire.read_packet() == bytes([0x40, 2, 0, 10])
    assert [e["payload"] for e in d.seen if e["ev"] == "message"] == ["ok"]
    assert d.stats()["dropped_in"] == 1


def test_pingreq_when_idle_and_reconnect_when_no_pingresp(drivers: Drivers, wire: Wire) -> None:
    d = connected_on_wire(drivers, wire, keepalive=2)  # 0.5 s to the first ping, 1 s to answer it
    # idle: a PINGREQ (section 3.12), answered with a PINGRESP (section 3.13)
    assert wire.read_packet() == bytes([0xC0, 0x00])
    wire.send(bytes([0xD0, 0x00]))
    # the next PINGREQ goes unanswered: the client gives up on the link ...
    assert wire.read_packet() == bytes([0xC0, 0x00])
    assert wire.closed_by_peer()
    # ... and connects again
    wire.accept()
    assert wire.read_packet()[0] == 0x10
    wire.send(CONNACK_OK)
    d.expect("connected", connects=2)
    stats = d.stats()
    assert stats["ping_timeouts"] == 1
    assert stats["reconnects"] == 1


def test_reconnect_when_the_peer_stops_reading(drivers: Drivers, wire: Wire) -> None:
    # The broker side goes silent and reads nothing: the send buffers fill,
    # a publish blocks, and the keepalive must still find the link dead.
    d = connected_on_wire(drivers, wire, keepalive=1)
    wire.send(bytes([0xD0, 0x00]))  # one PINGRESP, then nothing more
    d.send(op="flood", topic="t", fill=16000, count=5000)
    assert "stalled" in d.expect("error", op="flood")["error"]
    wire.accept()
    assert wire.read_packet()[0] == 0x10
    wire.send(CONNACK_OK)
    d.expect("connected", connects=2)
    # and the new link carries messages again
    d.send(op="publish", topic="t", payload="again", qos=1)
    pid = d.expect("published")["pid"]
    assert wire.read_packet() == packet(0x32, utf8_field(b"t") + pid.to_bytes(2, "big") + b"again")


@pytest.mark.parametrize(
    "bad",
    [
        bytes([0x40, 1, 0]),  # PUBACK one byte short
        bytes([0x90, 2, 0, 1]),  # SUBACK without a return code
        bytes([0x32, 3, 0, 1, ord("t")]),  # QoS 1 PUBLISH without its packet id
        bytes([0x50, 2, 0, 1]),  # PUBREC: QoS 2, which we never ask for
        bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),  # five length bytes
    ],
    ids=["short-puback", "short-suback", "publish-without-id", "pubrec", "length-overflow"],
)
def test_malformed_packets_drop_the_link(drivers: Drivers, wire: Wire, bad: bytes) -> None:
    d = connected_on_wire(drivers, wire)
    wire.send(bad)
    assert wire.closed_by_peer()
    # the reason stays readable (status, selftest) until the next CONNACK
    assert d.stats()["last_error"].startswith("reading from 127.0.0.1")
    wire.accept()
    assert wire.read_packet()[0] == 0x10
    wire.send(CONNACK_OK)
    d.expect("connected", connects=2)


def test_back_off_grows_while_sessions_end_at_once(drivers: Drivers, wire: Wire) -> None:
    # A broker that accepts and drops us straight away: each short session
    # doubles the back-off step, up to the cap.
    d = start(drivers, port=wire.port, keepalive=30, backoff_min_ms=50, backoff_max_ms=200)
    steps = []
    for _ in range(5):
        wire.accept()
        wire.read_packet()  # the CONNECT: the client now waits for its CONNACK
        steps.append(d.stats()["backoff_ms"])
        wire.send(CONNACK_OK)
        d.expect("connected")
        assert wire.conn is not None
        wire.conn.close()
        wire.conn = None
    assert steps == [0, 50, 100, 200, 200]


def test_disconnect(drivers: Drivers, wire: Wire) -> None:
    d = connected_on_wire(drivers, wire)
    d.send(op="disconnect")
    assert wire.read_packet() == bytes([0xE0, 0x00])  # section 3.14
    assert wire.closed_by_peer()
    d.expect("disconnected")
    assert d.proc.wait(WAIT) == 0


def test_socket_factory_replaces_the_network(drivers: Drivers, wire: Wire) -> None:
    # the client names a host that does not resolve; the factory decides
    start(drivers, host="sensor.invalid", port=1, factory_port=wire.port)
    wire.accept()
    assert wire.read_packet()[0] == 0x10
    wire.send(CONNACK_OK)
    drivers[0].expect("connected")


def test_on_connect_may_be_a_plain_function(drivers: Drivers, wire: Wire) -> None:
    d = start(drivers, port=wire.port, plain_on_connect=True)
    wire.accept()
    wire.read_packet()
    wire.send(CONNACK_OK)
    assert d.expect("connected")["plain"] is True
    assert d.stats()["connected"] is True


def test_publish_when_not_connected_raises_oserror(drivers: Drivers, wire: Wire) -> None:
    d = start(drivers, port=wire.port)
    d.send(op="publish", topic="t", payload="x", qos=1)
    assert "not connected" in d.expect("error", op="publish")["error"]


def test_refused_connection_is_retried_with_a_reason(drivers: Drivers, wire: Wire) -> None:
    d = start(drivers, port=wire.port, user="u", password="wrong", stop_after_failures=2)
    for _ in range(2):
        wire.accept()
        wire.read_packet()
        wire.send(bytes([0x20, 0x02, 0x00, 0x04]))  # section 3.2.2.3: bad user name or password
    e = d.expect("failures")
    assert e["n"] == 2
    assert "user name or password" in e["last_error"]


def _answer_subscribe(wire: Wire) -> None:
    """Read a SUBSCRIBE and grant QoS 1 (section 3.9) for its packet id."""
    sub = wire.read_packet()
    assert sub[0] == 0x82
    pid = sub[2:4]  # one length byte: the variable header starts at 2
    wire.send(bytes([0x90, 3]) + pid + bytes([1]))


def _silent_until_reconnect(wire: Wire) -> float:
    """Keep the stalled link open (unlike Wire.accept) and wait for the next
    connection; return the seconds it took."""
    stalled = wire.conn
    wire.conn = None
    began = time.monotonic()
    try:
        wire.accept()
    finally:
        if stalled is not None:
            stalled.close()
    return time.monotonic() - began


def test_a_broker_that_withholds_the_suback_is_left_and_the_next_one_works(
    drivers: Drivers, wire: Wire
) -> None:
    # The broker accepts, takes the SUBSCRIBE and then says nothing, with the
    # link left open: the client must give up within the keepalive and connect
    # again, and the next session, answered properly, carries messages.
    d = start(drivers, port=wire.port, keepalive=2, subscribe=[["cfg", 1]])
    wire.accept()
    assert wire.read_packet()[0] == 0x10
    wire.send(CONNACK_OK)
    assert wire.read_packet()[0] == 0x82
    assert _silent_until_reconnect(wire) < WAIT  # accept() itself times out at WAIT
    assert wire.read_packet()[0] == 0x10
    wire.send(CONNACK_OK)
    _answer_subscribe(wire)
    d.expect("connected", connects=2)
    d.send(op="publish", topic="t", payload="back", qos=1)
    pid = d.expect("published")["pid"]
    assert wire.read_packet() == packet(0x32, utf8_field(b"t") + pid.to_bytes(2, "big") + b"back")
    assert d.stats()["connect_failures"] == 0


def test_a_broker_that_withholds_the_connack_is_left(drivers: Drivers, wire: Wire) -> None:
    d = start(drivers, port=wire.port, keepalive=2, connect_timeout_ms=1000)
    wire.accept()
    assert wire.read_packet()[0] == 0x10  # and no CONNACK
    assert _silent_until_reconnect(wire) < WAIT
    assert wire.read_packet()[0] == 0x10
    wire.send(CONNACK_OK)
    d.expect("connected", connects=1)
    assert d.stats()["connect_failures"] == 1


def test_a_link_lost_while_subscribing_on_connect_is_rebuilt_at_once(
    drivers: Drivers, wire: Wire
) -> None:
    # keepalive 60 s: the SUBACK timeout is far beyond the accept() bound
    # (WAIT), so only noticing the closed link can bring the client back in time
    d = start(drivers, port=wire.port, keepalive=60, subscribe=[["cfg", 1]])
    wire.accept()
    assert wire.read_packet()[0] == 0x10
    wire.send(CONNACK_OK)
    assert wire.read_packet()[0] == 0x82
    wire.accept()  # closes the first link, then waits for the next
    assert wire.read_packet()[0] == 0x10
    wire.send(CONNACK_OK)
    _answer_subscribe(wire)
    d.expect("connected", connects=2)


def test_an_on_connect_that_never_returns_drops_the_link(drivers: Drivers, wire: Wire) -> None:
    # Whatever the application's on_connect waits for, the session set-up is
    # bounded (3 keepalives): the link is dropped and built again, and the
    # keepalive runs on the next one.
    d = start(drivers, port=wire.port, keepalive=1, hang_on_connect=1)
    wire.accept()
    assert wire.read_packet()[0] == 0x10
    wire.send(CONNACK_OK)
    d.expect("hanging", connects=1)
    assert wire.closed_by_peer()
    wire.accept()
    assert wire.read_packet()[0] == 0x10
    wire.send(CONNACK_OK)
    d.expect("connected", connects=2)
    # the second session is a normal one: idle, it pings
    assert wire.read_packet() == bytes([0xC0, 0x00])


# ------------------------------------------------------------------ a real broker


def test_qos1_publish_reaches_the_broker_and_is_acknowledged(
    drivers: Drivers, observers: list[Observer], broker: Mosquitto
) -> None:
    topic = f"hushlight/v1/test/sensors/{unique('s')}/levels"
    obs = observe(observers, broker.port, topic)
    d = start(drivers, client_id=unique("c"), port=broker.port)
    d.expect("connected")
    for i in range(3):
        d.send(op="publish", topic=topic, payload=f'{{"seq":{i}}}', qos=1)
    pids = [d.expect("published")["pid"] for _ in range(3)]
    # PUBACKs may come back between the publishes: look at every event seen
    while {e["pid"] for e in d.seen if e["ev"] == "puback"} != set(pids):
        d.expect("puback")
    assert [obs.get().payload for _ in range(3)] == [b'{"seq":0}', b'{"seq":1}', b'{"seq":2}']
    assert d.stats()["inflight"] == 0


def test_heap_does_not_grow_with_traffic(drivers: Drivers, broker: Mosquitto) -> None:
    # Nothing in the client may grow with uptime: after a warm-up burst, more
    # bursts of acknowledged QoS 1 messages leave the heap where it was.
    d = start(drivers, client_id=unique("c"), port=broker.port, keepalive=5)
    d.expect("connected")
    topic = f"hushlight/v1/test/sensors/{unique('s')}/levels"
    heap = []
    for _ in range(4):
        d.send(op="burst", topic=topic, count=300)
        heap.append(d.expect("burst")["mem_alloc"])
    stats = d.stats()
    assert stats["acked"] == stats["published"] == 1200
    # a few hundred bytes of slack for the scheduler's own queues
    assert max(heap[1:]) - heap[1] < 512, heap


def test_subscription_receives_the_retained_config(
    drivers: Drivers, observers: list[Observer], broker: Mosquitto
) -> None:
    topic = f"hushlight/v1/test/sensors/{unique('s')}/config"
    tool = observe(observers, broker.port, "nothing/here")
    tool.publish(topic, b'{"rev":3,"interval_s":2}', retain=True)
    d = start(drivers, client_id=unique("c"), port=broker.port, subscribe=[[topic, 1]])
    m = d.expect("message")
    assert (m["topic"], m["payload"], m["retained"]) == (topic, '{"rev":3,"interval_s":2}', True)
    # the retained message may overtake the end of on_connect
    if not any(e["ev"] == "connected" for e in d.seen):
        d.expect("connected")
    # a later config arrives live, not retained
    tool.publish(topic, b'{"rev":4}', retain=True)
    m = d.expect("message", payload='{"rev":4}')
    assert m["retained"] is False


KEEPALIVE = 2  # seconds; short so the broker's 1.5-keepalive bound is quick to reach
OFFLINE = b'{"state":"offline"}'


def sensor_with_will(drivers: Drivers, broker: Mosquitto) -> tuple[Driver, str]:
    """A connected client whose last will is the retained offline status."""
    status = f"hushlight/v1/test/sensors/{unique('s')}/status"
    d = start(
        drivers,
        client_id=unique("c"),
        port=broker.port,
        keepalive=KEEPALIVE,
        will_topic=status,
        will_payload=OFFLINE.decode(),
        will_retain=True,
    )
    d.expect("connected")
    return d, status


def wait_for_will(obs: Observer) -> paho.MQTTMessage:
    # MQTT 3.1.1 section 3.1.2.10: the broker gives up after 1.5 keepalives
    # of silence; the wait is only a bound so that a failure cannot hang
    return obs.get(timeout=KEEPALIVE * 1.5 + 5)


def test_last_will_after_the_process_is_killed(
    drivers: Drivers, observers: list[Observer], fresh_broker: Mosquitto
) -> None:
    d, status = sensor_with_will(drivers, fresh_broker)
    d.send(op="publish", topic=status, payload='{"state":"online"}', qos=1, retain=True)
    d.expect("puback")
    obs = observe(observers, fresh_broker.port, status)
    assert obs.get().payload == b'{"state":"online"}'
    d.proc.send_signal(signal.SIGKILL)
    assert wait_for_will(obs).payload == OFFLINE
    # and it is retained for whoever looks later
    msg = observe(observers, fresh_broker.port, status).get()
    assert (msg.payload, msg.retain) == (OFFLINE, True)


def test_last_will_when_the_sensor_falls_silent(
    drivers: Drivers, observers: list[Observer], fresh_broker: Mosquitto
) -> None:
    # A frozen process keeps its socket open: only the keepalive can tell the
    # broker that the sensor is gone (a lamp post losing power or Wi-Fi).
    d, status = sensor_with_will(drivers, fresh_broker)
    obs = observe(observers, fresh_broker.port, status)
    d.proc.send_signal(signal.SIGSTOP)
    try:
        will = wait_for_will(obs)
    finally:
        d.proc.send_signal(signal.SIGCONT)
    assert will.payload == OFFLINE


def test_reconnects_after_a_broker_restart(
    drivers: Drivers, observers: list[Observer], fresh_broker: Mosquitto
) -> None:
    topic = f"hushlight/v1/test/sensors/{unique('s')}/levels"
    d = start(drivers, client_id=unique("c"), port=fresh_broker.port, keepalive=5)
    d.expect("connected", connects=1)
    fresh_broker.restart()
    d.expect("connected", connects=2)
    obs = observe(observers, fresh_broker.port, topic)
    d.send(op="publish", topic=topic, payload="after", qos=1)
    d.expect("puback")  # (the "published" event may come before or after it)
    assert obs.get().payload == b"after"
    stats = d.stats()
    assert stats["reconnects"] == 1
    assert stats["connected"] is True


def test_works_with_the_demo_broker(drivers: Drivers) -> None:
    # `hushlight demo` runs the sensors against amqtt, not Mosquitto
    with BrokerProcess() as b:
        config = f"hushlight/v1/test/sensors/{unique('s')}/config"
        d = start(drivers, client_id=unique("c"), port=b.port, subscribe=[[config, 1]])
        d.expect("connected")
        d.send(op="publish", topic=config, payload='{"rev":1}', qos=1, retain=True)
        d.expect("puback")
        assert d.expect("message")["payload"] == '{"rev":1}'  # our own subscription
        d.send(op="disconnect")
        d.expect("disconnected")


def test_user_and_password_against_a_broker_without_anonymous_access(
    drivers: Drivers, tmp_path: Path
) -> None:
    passwords = tmp_path / "passwords"
    passwords.write_text(f"ns-01:{hash_password('right horse battery')}\n")
    with Mosquitto(password_file=passwords) as m:
        good = start(drivers, port=m.port, user="ns-01", password="right horse battery")
        good.expect("connected")
        bad = start(drivers, port=m.port, user="ns-01", password="wrong", stop_after_failures=1)
        assert "mqtt_password" in bad.expect("failures")["last_error"]
        anonymous = start(drivers, port=m.port, stop_after_failures=1)
        assert "refused the connection" in anonymous.expect("failures")["last_error"]


def test_tls_with_the_pinned_ca(
    drivers: Drivers, observers: list[Observer], tls_ca: TlsFiles
) -> None:
    with Mosquitto(tls=(tls_ca.ca, tls_ca.cert, tls_ca.key)) as m:
        sensor = unique("s")
        topic = f"hushlight/v1/test/sensors/{sensor}/levels"
        config = f"hushlight/v1/test/sensors/{sensor}/config"
        obs = observe(observers, m.port, topic)  # plain listener, to watch
        obs.publish(config, b'{"rev":1}', retain=True)
        d = start(
            drivers,
            client_id=unique("c"),
            port=m.tls_port,
            ssl_cafile=str(tls_ca.ca),
            server_hostname="localhost",
            subscribe=[[config, 1]],
        )
        # SUBACK and the retained config come back through TLS records
        assert d.expect("message")["payload"] == '{"rev":1}'
        for i in range(5):
            d.send(op="publish", topic=topic, payload=f"over tls {i}", qos=1)
        for _ in range(5):
            d.expect("puback")
        assert [obs.get().payload for _ in range(5)] == [f"over tls {i}".encode() for i in range(5)]
        obs.close()
        observers.clear()


def test_tls_over_a_socket_factory(drivers: Drivers, tls_ca: TlsFiles) -> None:
    with Mosquitto(tls=(tls_ca.ca, tls_ca.cert, tls_ca.key)) as m:
        d = start(
            drivers,
            host="broker.invalid",  # never resolved: the factory connects
            port=8883,
            factory_port=m.tls_port,
            ssl_cafile=str(tls_ca.ca),
            server_hostname="localhost",
        )
        d.expect("connected")
        d.send(op="publish", topic="t", payload="x", qos=1)
        d.expect("puback")


def test_tls_refuses_a_broker_signed_by_another_ca(
    drivers: Drivers, tls_ca: TlsFiles, other_ca: TlsFiles
) -> None:
    with Mosquitto(tls=(tls_ca.ca, tls_ca.cert, tls_ca.key)) as m:
        d = start(
            drivers,
            port=m.tls_port,
            ssl_cafile=str(other_ca.ca),
            server_hostname="localhost",
            stop_after_failures=1,
        )
        e = d.expect("failures")
        assert "cannot connect" in e["last_error"]
        assert not any(ev["ev"] == "connected" for ev in d.seen)


def test_a_host_that_does_not_resolve_says_so(drivers: Drivers) -> None:
    d = start(drivers, host="broker.invalid", port=1883, stop_after_failures=1)
    assert "cannot resolve 'broker.invalid'" in d.expect("failures")["last_error"]


def test_tls_with_an_unreadable_ca_file_says_so(drivers: Drivers, tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("this is not a certificate\n")
    for cafile in (tmp_path / "missing.pem", not_pem):
        d = start(drivers, port=1, ssl_cafile=str(cafile), stop_after_failures=1)
        error = d.expect("failures")["last_error"]
        assert f"the CA file {cafile} cannot be used" in error
        assert "provision" in error


def test_tls_refuses_a_certificate_for_another_name(drivers: Drivers, tls_ca: TlsFiles) -> None:
    with Mosquitto(tls=(tls_ca.ca, tls_ca.cert, tls_ca.key)) as m:
        d = start(
            drivers,
            port=m.tls_port,
            ssl_cafile=str(tls_ca.ca),
            server_hostname="broker.example.org",
            stop_after_failures=1,
        )
        d.expect("failures")
        assert not any(ev["ev"] == "connected" for ev in d.seen)
