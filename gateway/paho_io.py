"""Cheaper socket work for the gateway's MQTT connection (paho under aiomqtt).

paho, as aiomqtt drives it, costs the gateway more per record than decoding
and the policy together:

- it handles one packet per readable event of the event loop, reading each
  with three or more ``recv`` calls (the fixed header byte, each byte of the
  remaining length, the rest);
- every QoS 1 message queues its own PUBACK, and each PUBACK asks the event
  loop for a writer (a wake-up through its self-pipe, two ``epoll_ctl`` calls)
  and goes out in its own ``send``.

`tune` changes that on one connected client: a readable event reads up to
`READ_SIZE` bytes (about a hundred records: one ``recv`` on a plain socket,
one per TLS record over TLS) and hands every complete packet in it to paho,
and the PUBACKs of that read go out together in one packet write.  With a
`deliver` callback the QoS 0/1 PUBLISH packets do not go through paho at all:
they are cut out of the buffer and delivered (topic, payload) in a few slices
each, and a packet cut by the end of a read waits there for its rest; every
other packet is still paho's.

A read stays smaller than the ingest task's turn (`service.BATCH_MAX`
messages per event-loop iteration), so a gateway that falls behind leaves the
backlog with the broker, as before, instead of filling its own queue until it
drops messages.  What is left in the kernel wakes the reader again on the next
iteration (readiness is level-triggered).  What the broker sees is unchanged:
the same packets, acknowledged after the message reached the gateway's queue.
A connection lost before the drain ends loses those PUBACKs, and the broker
delivers the messages again (QoS 1; ingest drops the duplicates).

It relies on private parts of paho-mqtt 2.2 (pinned in constraints.txt);
on anything unexpected (websockets, MQTT 5, another paho) the client is left
alone.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

__all__ = ["READ_SIZE", "tune"]

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


def tune(client: aiomqtt.Client, deliver: Callable[[str, bytes], None] | None = None) -> bool:
    """Install the buffered reads and grouped PUBACKs on a connected client; True if done.

    With `deliver`, each message goes to ``deliver(topic, payload)`` straight
    from paho, without the `aiomqtt.Message` (and its validated `Topic`) that
    aiomqtt builds per message; `deliver` must not raise.
    """
    mq: Any = client._client  # aiomqtt has no hook for any of this
    sock = getattr(mq, "_sock", None)
    if (
        # websockets (or anything else): paho's own reads.  A TLS socket is fine:
        # one read of READ_SIZE takes a whole TLS record (16 KiB at most), so no
        # decrypted data is left behind where readiness cannot see it, and
        # aiomqtt reads again while the socket says some is pending.
        not isinstance(sock, socket.socket)
        or type(sock) not in (socket.socket, ssl.SSLSocket)
        or getattr(mq, "_protocol", None) not in (paho.MQTTv31, paho.MQTTv311)
        or getattr(mq, "_manual_ack", True)
        or not isinstance(getattr(mq, "_in_packet", None), dict)
        or not hasattr(mq, "_msgtime_mutex")
        or not all(
            callable(getattr(mq, name, None))
            for name in (
                "_packet_read",
                "_loop_rc_handle",
                "_send_puback",
                "_packet_queue",
                "_handle_on_message",
                "_call_socket_register_write",
            )
        )
    ):
        log.info("MQTT socket left to paho's own reads and acknowledgements")
        return False
    reader = _ReadBuffer(sock, mq._call_socket_register_write)
    acks: list[bytes] = []
    packet_read = mq._packet_read
    rc_handle = mq._loop_rc_handle
    packet_queue = mq._packet_queue

    def sock_recv(bufsize: int) -> bytes:
        if mq._sock is not sock:
            raise ConnectionError("the MQTT socket was closed")
        return reader.recv(bufsize)

    def send_puback(mid: int) -> Any:
        acks.append(bytes((_PUBACK, 2, mid >> 8, mid & 0xFF)))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def flush_acks() -> None:
        if acks and mq._sock is sock:
            blob = b"".join(acks)
            acks.clear()
            # one write for all of them; paho does nothing on a PUBACK's completion
            packet_queue(_PUBACK, blob, 0, 0)
        else:
            acks.clear()

    def loop_read(max_packets: int = 1) -> Any:
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
                    return rc_handle(rc)
        finally:
            flush_acks()

    fast: Callable[[], tuple[int, int]] | None = None
    if deliver is not None:
        put = deliver

        def fast_publishes() -> tuple[int, int]:
            """Deliver the whole QoS 0/1 PUBLISH packets at the front of the buffer:
            (how many, what stopped the scan: `_EMPTY`, `_PARTIAL` or `_OTHER`).

            paho reads a packet in three or more pieces, builds a message object
            and logs it; here a packet is a few slices of the buffer.  Anything
            else (another packet type, QoS 2, anything malformed) is `_OTHER`,
            left to paho; a packet the buffer holds only the start of is
            `_PARTIAL`, completed by the next read.
            """
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

        fast = fast_publishes

        def handle_on_message(message: Any) -> None:
            # In place of paho's dispatch, which walks its topic-filter tree for
            # callbacks aiomqtt never registers, under two locks, per message.
            # A topic that is not UTF-8 (a broker should refuse it) becomes a stray.
            put(message._topic.decode("utf-8", "replace"), message.payload)

        mq._handle_on_message = handle_on_message
    mq._sock_recv = sock_recv
    mq._send_puback = send_puback
    mq.loop_read = loop_read
    return True
