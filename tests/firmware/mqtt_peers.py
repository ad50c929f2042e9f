"""Peers of the firmware MQTT client in tests: the client itself in a
MicroPython process (`Driver`), a scripted broker that checks bytes
(`Wire`), a CPython observer on a real broker (`Observer`), and the MQTT
3.1.1 encodings the expected bytes are built from."""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tools import upy

DRIVER = Path(__file__).parent / "upy" / "mqtt_driver.py"
WAIT = 15.0  # upper bound for any single expected event; never reached when things work

# ------------------------------------------------------------------ the spec


def remaining_length(n: int) -> bytes:
    """Section 2.2.3: 7 bits per byte, least significant group first,
    bit 7 set when another byte follows."""
    out = bytearray()
    while True:
        digit, n = n % 128, n // 128
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8_field(b: bytes) -> bytes:
    """Section 1.5.3: a two-byte big-endian length, then the bytes."""
    return len(b).to_bytes(2, "big") + b


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + remaining_length(len(body)) + body


CONNACK_OK = bytes([0x20, 0x02, 0x00, 0x00])  # section 3.2: accepted, no session present


# ------------------------------------------------------------------ the peers


class Driver:
    """The MQTT client in a MicroPython process."""

    def __init__(self, folder: Path, **opts: Any) -> None:
        self.opts = opts
        # options go in a file: this unix port build crashes on long arguments
        path = folder / f"driver-{uuid.uuid4().hex[:8]}.json"
        path.write_text(json.dumps(opts))
        self.proc = upy.spawn(
            DRIVER,
            str(path),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self.events.put({"ev": "garbage", "line": line.decode(errors="replace")})
        self.events.put(None)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()

    def expect(self, ev: str, timeout: float = WAIT, **match: Any) -> dict[str, Any]:
        """The next event `ev` whose fields include `match` (earlier others are kept in `seen`)."""
        while True:
            try:
                e = self.events.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {ev} {match} event; saw {self.seen}") from None
            if e is None:
                self.events.put(None)
                raise AssertionError(f"driver exited before {ev}; saw {self.seen}\n{self.stderr()}")
            self.seen.append(e)
            if e["ev"] == ev and all(e.get(k) == v for k, v in match.items()):
                return e

    def stats(self) -> dict[str, Any]:
        self.send(op="stats")
        return self.expect("stats")

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


class Wire:
    """A scripted broker on a loopback port: reads packets whole, sends raw bytes."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.listener.settimeout(WAIT)
        self.port: int = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(WAIT)

    def _exact(self, n: int) -> bytes:
        assert self.conn is not None
        data = b""
        while len(data) < n:
            chunk = self.conn.recv(n - len(data))
            if not chunk:
                raise AssertionError(f"client closed the connection after {data!r}")
            data += chunk
        return data

    def read_packet(self) -> bytes:
        """One whole packet as sent: fixed header, length bytes, body (section 2.2)."""
        first = self._exact(1)
        length_bytes = b""
        n = 0
        for i in range(4):
            b = self._exact(1)
            length_bytes += b
            n += (b[0] & 0x7F) << (7 * i)
            if not b[0] & 0x80:
                break
        return first + length_bytes + self._exact(n)

    def send(self, data: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(data)

    def closed_by_peer(self) -> bool:
        assert self.conn is not None
        try:
            return self.conn.recv(1) == b""
        except ConnectionResetError:
            return True  # closed with our bytes unread: the kernel answers with a reset

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


class Drivers(list[Driver]):
    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder


def start(drivers: Drivers, **opts: Any) -> Driver:
    opts.setdefault("client_id", "c")
    opts.setdefault("host", "127.0.0.1")
    opts.setdefault("backoff_min_ms", 100)
    opts.setdefault("backoff_max_ms", 400)
    d = Driver(drivers.folder, **opts)
    drivers.append(d)
    return d


def connected_on_wire(drivers: Drivers, wire: Wire, **opts: Any) -> Driver:
    d = start(drivers, port=wire.port, **opts)
    wire.accept()
    assert wire.read_packet()[0] == 0x10
    wire.send(CONNACK_OK)
    d.expect("connected")
    return d


# ------------------------------------------------------------------ a real broker


class Observer:
    """A CPython MQTT client (paho) that records what arrives on a topic filter."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"obs-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.on_connect = lambda c, *_a: c.subscribe(topic, 1)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self.subscribed.wait(WAIT)

    def get(self, timeout: float = WAIT) -> paho.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no message arrived") from None

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def observe(observers: list[Observer], port: int, topic: str) -> Observer:
    o = Observer(port, topic)
    observers.append(o)
    return o


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
