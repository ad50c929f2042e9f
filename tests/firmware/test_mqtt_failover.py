"""firmware/hushlight/mqtt.py with several brokers (the `brokers` setting, from
a config's comma-separated `broker` list), in the MicroPython unix port.

The peers are loopback sockets: one that takes the connection and never
answers (a broker that hangs), a port nobody listens on (a broker that is
down) and the scripted broker `Wire`.  End to end with real brokers:
tests/tools/test_sensor_failover.py (two Mosquittos) and
tests/cluster/test_failover.py (the RabbitMQ cluster).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.firmware.mqtt_peers import CONNACK_OK, Drivers, Wire, start
from tools.broker import free_port

BACKOFF_MIN_MS = 100  # mqtt_peers.start's default


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
def silent() -> Iterator[int]:
    """The port of a listener that never accepts: the kernel completes the TCP
    handshake, and the CONNECT waits for a CONNACK that never comes."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield int(s.getsockname()[1])
    s.close()


def broker(port: int) -> list[Any]:
    return [f"mqtt://127.0.0.1:{port}", "127.0.0.1", port]


def test_the_client_tries_each_broker_in_turn_and_keeps_the_one_that_answers(
    drivers: Drivers, wire: Wire, silent: int
) -> None:
    brokers = [broker(silent), broker(free_port()), broker(wire.port)]
    d = start(
        drivers,
        client_id="leuven-ns-01",
        port=silent,
        brokers=brokers,
        connect_timeout_ms=500,
        report_down=True,
    )
    wire.accept()
    first = wire.read_packet()
    assert first[0] == 0x10 and b"leuven-ns-01" in first
    wire.send(CONNACK_OK)
    d.expect("connected", connects=1)
    stats = d.stats()
    assert (stats["url"], stats["connect_failures"]) == (brokers[2][0], 2)
    hung, down = [e["why"] for e in d.seen if e["ev"] == "down"]
    assert f"cannot connect to 127.0.0.1:{silent}: timed out" in hung, hung
    assert f"trying {brokers[1][0]} next" in hung, hung
    assert f"cannot connect to 127.0.0.1:{brokers[1][2]}: connection refused" in down, down
    assert f"trying {brokers[2][0]} next" in down, down

    # a lost link is first tried again on the same broker, with the same
    # client id and the persistent session (clean session off)
    assert wire.conn is not None
    wire.conn.close()
    wire.accept()
    again = wire.read_packet()
    assert again == first and not again[9] & 0x02  # section 3.1.2.4: clean session off
    wire.send(CONNACK_OK)
    d.expect("connected", connects=2)
    stats = d.stats()
    assert (stats["url"], stats["connect_failures"]) == (brokers[2][0], 2)


def test_the_back_off_grows_per_round_of_the_list_not_per_broker(drivers: Drivers) -> None:
    # three brokers down: each is tried once per round, the next one of a
    # round after the shortest pause; the back-off doubles between rounds
    brokers = [broker(free_port()) for _ in range(3)]
    d = start(
        drivers,
        port=brokers[0][2],
        brokers=brokers,
        backoff_max_ms=1600,
        report_down=True,
        stop_after_failures=9,
    )
    d.expect("failures")
    downs = [e for e in d.seen if e["ev"] == "down"][:9]
    assert len(downs) == 9, d.seen
    tried = [int(e["why"].split("cannot connect to 127.0.0.1:")[1].split(":")[0]) for e in downs]
    assert tried == [b[2] for b in brokers] * 3
    waits = [e["retry_ms"] for e in downs]
    # within a round: at most the shortest pause
    assert all(w <= BACKOFF_MIN_MS for i, w in enumerate(waits) if (i + 1) % 3), waits
    # after each round: the back-off, half fixed and half random, doubling
    rounds = [waits[2], waits[5], waits[8]]
    for n, w in enumerate(rounds):
        step = BACKOFF_MIN_MS << n
        assert step // 2 <= w < step, (n, waits)


def test_one_broker_keeps_the_plain_back_off(drivers: Drivers) -> None:
    port = free_port()
    d = start(drivers, port=port, report_down=True, stop_after_failures=3)
    d.expect("failures")
    downs = [e for e in d.seen if e["ev"] == "down"][:3]
    assert all(f"127.0.0.1:{port}" in e["why"] and "next" not in e["why"] for e in downs), downs
    for n, e in enumerate(downs):
        step = BACKOFF_MIN_MS << n
        assert step // 2 <= e["retry_ms"] < step, downs


def test_a_broker_that_refuses_the_client_is_named_and_passed_over(
    drivers: Drivers, wire: Wire
) -> None:
    refusing = Wire()
    try:
        brokers = [broker(refusing.port), broker(wire.port)]
        d = start(drivers, port=refusing.port, brokers=brokers, report_down=True)
        refusing.accept()
        refusing.read_packet()
        refusing.send(bytes([0x20, 0x02, 0x00, 0x05]))  # section 3.2.2.3: not authorised
        wire.accept()
        assert wire.read_packet()[0] == 0x10
        wire.send(CONNACK_OK)
        d.expect("connected")
    finally:
        refusing.close()
    [down] = [e["why"] for e in d.seen if e["ev"] == "down"]
    assert f"the broker 127.0.0.1:{refusing.port} refused the connection" in down, down
    assert "CONNACK code 5" in down and f"trying {brokers[1][0]} next" in down, down
