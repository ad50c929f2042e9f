"""The gateway's read path on its MQTT connection (paho under aiomqtt).

`tune` installs `PahoReadPath` on a connected client:

- a readable event reads up to `READ_SIZE` bytes (one ``recv`` on a plain
  socket, one per TLS record over TLS) and every complete packet in them is
  handled in that event;
- the PUBACKs of one read go out together in one packet write, after their
  messages reached the gateway's queue;
- with a `deliver` callback, QoS 0/1 PUBLISH packets are cut out of the read
  buffer and delivered as (topic, payload); a packet cut by the end of a read
  waits in the buffer for its rest; every other packet is paho's.

A read is smaller than one ingest batch (`BATCH_MAX`), so a gateway that falls
behind leaves the backlog with the broker, not in its own queue where it
would have to drop messages.  What is left in the kernel wakes the reader on
the next iteration (readiness is level-triggered).  A connection lost before
the PUBACKs go out leaves those messages unacknowledged and the broker
delivers them again (QoS 1; ingest drops the duplicates).  The broker sees
the packets paho alone would send.

`PahoReadPath.PRIVATES` lists the private parts of paho-mqtt 2.2 (pinned in
constraints.txt) this relies on; a client that does not fit (websockets,
MQTT 5, another paho) is left to paho.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

__all__ = ["READ_SIZE", "PahoReadPath", "tune"]

log = logging.getLogger("hushlight.mqtt")

READ_SIZE = 16384  # about 110 level records of ~150 bytes (topic, header, JSON)
_PUBACK = int(paho.PUBACK)
# What the scan of the buffer stopped at (`fast_publishes`).
_EMPTY, _PARTIAL, _OTHER = 0, 1, 2


class _ReadBuffer:
    """What the socket gave, served to paho's small reads and to the PUBLISH scan.

    A readable event may take up to `READ_SIZE` bytes (`budget`): one ``recv``
    on a plain socket, one per TLS record (each holds a packet or a few) on a
    TLS socket.  The rest waits in the kernel and brings the reader back.
    """

    __slots__ = ("budget", "buf", "closed", "on_want_write", "pos", "sock")

    def __init__(self, sock: socket.socket, on_want_write: Callable[[], object]) -> None:
        self.sock = sock
        self.on_want_write = on_want_write
        self.buf = b""
        self.pos = 0
        self.budget = 0
        self.closed = False

    def refill(self) -> bool:
        """Append what the socket has after what is left unread; False once this event's
        budget is spent.  BlockingIOError: nothing more now."""
        if self.budget <= 0:
            return False
        try:
            data = self.sock.recv(READ_SIZE)
        except ssl.SSLWantReadError:
            raise BlockingIOError from None  # half a TLS record so far
        except ssl.SSLWantWriteError:
            # TLS wants to send before it can read (a key update): as paho does
            self.on_want_write()
            raise BlockingIOError from None
        if not data:
            self.closed = True  # by the broker: paho reports the lost connection
            return False
        self.budget -= len(data)
        rest = self.buf[self.pos :]
        self.buf = rest + data if rest else data
        self.pos = 0
        return True

    def recv(self, n: int) -> bytes:
        if self.pos >= len(self.buf):
            if self.closed:
                return b""
            if not self.refill():
                if self.closed:
                    return b""
                raise BlockingIOError  # enough for this event
        pos = self.pos
        chunk = self.buf[pos : pos + n]
        self.pos = pos + len(chunk)
        return chunk


class PahoReadPath:
    """The read path of one connected paho client: buffered reads, grouped PUBACKs and,
    with `deliver`, PUBLISH packets cut straight out of the read buffer.

    `PRIVATES` lists every private part of paho-mqtt it reads, calls or
    replaces, with what each must be: ``(kind, parameters)``, the parameters
    (after ``self``) for a method.  `install` checks them on the client before
    it touches anything, and tests/gateway/test_paho_io.py checks them against
    the installed paho, so an upgrade that moves one fails a test.
    """

    PRIVATES: ClassVar[Mapping[str, tuple[str, tuple[str, ...]]]] = {
        # read
        "_sock": ("socket", ()),  # the connected socket
        "_protocol": ("int", ()),  # MQTTv31, MQTTv311 or MQTTv5
        "_manual_ack": ("bool", ()),
        "_in_packet": ("dict", ()),  # the packet paho is reading; "command" 0 between packets
        "_msgtime_mutex": ("lock", ()),
        # written: the keepalive counts from the last bytes received
        "_last_bytes_received": ("float", ()),
        # called
        "_packet_read": ("method", ()),
        "_loop_rc_handle": ("method", ("rc",)),
        "_packet_queue": ("method", ("command", "packet", "mid", "qos", "info")),
        "_call_socket_register_write": ("method", ()),
        # replaced on the instance (paho calls them through `self`)
        "_sock_recv": ("method", ("bufsize",)),
        "_send_puback": ("method", ("mid",)),
        "_handle_on_message": ("method", ("message",)),
        "loop_read": ("method", ("max_packets",)),
    }
    # paho's message object: its topic as the bytes received
    MESSAGE_PRIVATES: ClassVar[Mapping[str, str]] = {"_topic": "bytes"}
    # aiomqtt's client: the paho client it drives
    AIOMQTT_PRIVATES: ClassVar[Mapping[str, str]] = {"_client": "paho client"}

    __slots__ = ("acks", "deliver", "mq", "reader", "sock")

    def __init__(
        self, mq: Any, sock: socket.socket, deliver: Callable[[str, bytes], None] | None
    ) -> None:
        self.mq = mq
        self.sock = sock
        self.deliver = deliver
        self.reader = _ReadBuffer(sock, mq._call_socket_register_write)
        self.acks: list[bytes] = []

    @classmethod
    def fits(cls, mq: object) -> bool:
        """True if `mq` is a paho client this read path can take over: a plain or TLS
        socket (not websockets), MQTT 3.1 or 3.1.1 (MQTT 5 PUBACKs may carry reason
        codes), automatic acknowledgements, and every private of `PRIVATES` as listed."""
        sock = getattr(mq, "_sock", None)
        return (
            # A TLS socket is fine: one read of READ_SIZE takes a whole TLS record
            # (16 KiB at most), so no decrypted data is left behind where readiness
            # cannot see it, and aiomqtt reads again while the socket says some is pending.
            type(sock) in (socket.socket, ssl.SSLSocket)
            and getattr(mq, "_protocol", None) in (paho.MQTTv31, paho.MQTTv311)
            and not getattr(mq, "_manual_ack", True)
            and all(
                _is_kind(getattr(mq, name, None), kind) for name, (kind, _) in cls.PRIVATES.items()
            )
        )

    def install(self) -> None:
        mq = self.mq
        if self.deliver is not None:
            mq._handle_on_message = self.handle_on_message
        mq._sock_recv = self.sock_recv
        mq._send_puback = self.send_puback
        mq.loop_read = self.loop_read

    def sock_recv(self, bufsize: int) -> bytes:
        if self.mq._sock is not self.sock:
            raise ConnectionError("the MQTT socket was closed")
        return self.reader.recv(bufsize)

    def send_puback(self, mid: int) -> Any:
        self.acks.append(bytes((_PUBACK, 2, mid >> 8, mid & 0xFF)))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def flush_acks(self) -> None:
        acks = self.acks
        if acks and self.mq._sock is self.sock:
            blob = b"".join(acks)
            acks.clear()
            # one write for all of them; paho does nothing on a PUBACK's completion
            self.mq._packet_queue(_PUBACK, blob, 0, 0)
        else:
            acks.clear()

    def loop_read(self, max_packets: int = 1) -> Any:
        """paho's `loop_read`, called by aiomqtt when the socket is readable: read up
        to `READ_SIZE` bytes, hand every whole packet on, send their PUBACKs together."""
        mq = self.mq
        sock = self.sock
        reader = self.reader
        fast = None if self.deliver is None else self.fast_publishes
        packet_read = mq._packet_read
        reader.budget = READ_SIZE
        try:
            while True:
                if mq._sock is not sock:
                    return MQTTErrorCode.MQTT_ERR_NO_CONN
                if fast is not None and mq._in_packet["command"] == 0:
                    delivered, stop = fast()
                    if delivered:
                        with mq._msgtime_mutex:
                            mq._last_bytes_received = time.monotonic()
                    if stop != _OTHER:
                        # the buffer is used up, or ends inside a packet: read on
                        try:
                            if reader.refill():
                                continue
                        except BlockingIOError:
                            return MQTTErrorCode.MQTT_ERR_SUCCESS  # the rest is not here yet
                        if not reader.closed:
                            return MQTTErrorCode.MQTT_ERR_SUCCESS  # enough for this event
                rc = packet_read()
                if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                    # the buffer is used up and this event's reading done; paho keeps
                    # the packet it is in the middle of for the next one
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
                if rc > 0:
                    return mq._loop_rc_handle(rc)
        finally:
            self.flush_acks()

    def fast_publishes(self) -> tuple[int, int]:
        """Deliver the whole QoS 0/1 PUBLISH packets at the front of the buffer:
        (how many, what stopped the scan: `_EMPTY`, `_PARTIAL` or `_OTHER`).

        A packet here is a few slices of the buffer, where paho would read it in
        three or more pieces, build a message object and log it.  Anything else
        (another packet type, QoS 2, anything malformed) is `_OTHER`, left to
        paho; a packet the buffer holds only the start of is `_PARTIAL`,
        completed by the next read.
        """
        reader = self.reader
        put = self.deliver
        assert put is not None  # only installed with `deliver`
        acks = self.acks
        buf = reader.buf
        pos = reader.pos
        end = len(buf)
        done = 0
        stopped = _EMPTY
        while pos < end:
            command = buf[pos]
            qos = (command >> 1) & 3
            if command >> 4 != 3 or qos >= 2:
                stopped = _OTHER
                break
            length, i, shift = 0, pos + 1, 0
            while True:
                if i >= end:
                    stopped = _PARTIAL
                    break
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift >= 28:
                    stopped = _OTHER  # over four length bytes: paho says so
                    break
            if stopped != _EMPTY:
                break
            stop = i + length
            if stop > end:
                stopped = _PARTIAL
                break
            topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1]) if length >= 2 else stop + 1
            body = topic_end + 2 if qos else topic_end
            if topic_end == i + 2 or body > stop:
                stopped = _OTHER  # no topic, or one longer than the packet: paho says so
                break
            put(buf[i + 2 : topic_end].decode("utf-8", "replace"), buf[body:stop])
            if qos:
                acks.append(bytes((_PUBACK, 2, buf[topic_end], buf[topic_end + 1])))
            pos = stop
            done += 1
        reader.pos = pos
        return done, stopped

    def handle_on_message(self, message: Any) -> None:
        """In place of paho's dispatch, which walks its topic-filter tree (for callbacks
        aiomqtt never registers) under two locks per message.  A topic that is not
        UTF-8 (a broker should refuse it) becomes a stray."""
        assert self.deliver is not None  # only installed with `deliver`
        self.deliver(message._topic.decode("utf-8", "replace"), message.payload)


def _is_kind(value: object, kind: str) -> bool:
    if kind == "method":
        return callable(value)
    if kind == "lock":
        return callable(getattr(value, "acquire", None)) and callable(
            getattr(value, "release", None)
        )
    return isinstance(value, _KINDS[kind])


_KINDS: dict[str, type | tuple[type, ...]] = {
    "socket": socket.socket,
    "int": int,
    "bool": bool,
    "dict": dict,
    "float": float,
    "bytes": bytes,
    "paho client": paho.Client,
}


def tune(client: aiomqtt.Client, deliver: Callable[[str, bytes], None] | None = None) -> bool:
    """Install `PahoReadPath` on a connected client; True if done, False (paho's own reads
    left in place) if the client does not fit.

    With `deliver`, each message goes to ``deliver(topic, payload)`` straight
    from paho, without the `aiomqtt.Message` (and its validated `Topic`) that
    aiomqtt builds per message; `deliver` must not raise.
    """
    mq: Any = client._client  # aiomqtt has no hook for any of this
    if not PahoReadPath.fits(mq):
        log.info("MQTT socket left to paho's own reads and acknowledgements")
        return False
    PahoReadPath(mq, mq._sock, deliver).install()
    return True
