"""Cheaper socket work for the gateway's MQTT connection (paho under aiomqtt).

paho, as aiomqtt drives it, costs the gateway more per record than decoding
and the policy together:

- it handles one packet per readable event of the event loop, reading each
  with three or more ``recv`` calls (the fixed header byte, each byte of the
  remaining length, the rest);
- every QoS 1 message queues its own PUBACK, and each PUBACK asks the event
  loop for a writer (a wake-up through its self-pipe, two ``epoll_ctl`` calls)
  and goes out in its own ``send``.

`tune` changes that on one connected client: a readable event takes what
one ``recv`` of `READ_SIZE` bytes brings (about a hundred records) and hands
every complete packet in it to paho, and the PUBACKs of that read go out
together in one packet write.  With a `deliver` callback the QoS 0/1 PUBLISH
packets in the read do not go through paho at all: they are cut out of the
buffer and delivered (topic, payload) in a few slices each; every other
packet, and a PUBLISH cut by the end of the read, is still paho's.

A read stays smaller than the ingest task's turn (`service.BATCH_MAX`
messages per event-loop iteration), so a gateway that falls behind leaves the
backlog with the broker, as before, instead of filling its own queue until it
drops messages.  What is left in the kernel wakes the reader again on the next
iteration (readiness is level-triggered).  What the broker sees is unchanged:
the same packets, acknowledged after the message reached the gateway's queue.
A connection lost before the drain ends loses those PUBACKs, and the broker
delivers the messages again (QoS 1; ingest drops the duplicates).

It relies on private parts of paho-mqtt 2.2 (pinned in constraints.txt);
on anything unexpected (TLS, MQTT 5, another paho) the client is left alone.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

__all__ = ["REFILLS", "tune"]

log = logging.getLogger("hushlight.mqtt")

READ_SIZE = 16384  # about 110 level records of ~150 bytes (topic, header, JSON)
REFILLS = 1  # socket reads per readable event
_PUBACK = int(paho.PUBACK)


class _ReadBuffer:
    """Serves paho's small reads from one large ``recv``."""

    __slots__ = ("buf", "pos", "refills", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.pos = 0
        self.refills = 0

    def recv(self, n: int) -> bytes:
        if self.pos >= len(self.buf):
            if self.refills >= REFILLS:
                # enough for this turn; what the kernel holds brings us back
                raise BlockingIOError
            self.refills += 1
            self.buf = self.sock.recv(READ_SIZE)  # BlockingIOError: nothing more now
            self.pos = 0
            if not self.buf:
                return b""  # closed by the broker: paho reports the lost connection
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
        type(sock) is not socket.socket  # TLS or websockets: paho's own reads
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
            )
        )
    ):
        log.info("MQTT socket left to paho's own reads and acknowledgements")
        return False
    reader = _ReadBuffer(sock)
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
        reader.refills = 0
        try:
            while True:
                if mq._sock is not sock:
                    return MQTTErrorCode.MQTT_ERR_NO_CONN
                if fast is not None and mq._in_packet["command"] == 0 and fast():
                    with mq._msgtime_mutex:
                        mq._last_bytes_received = time.monotonic()
                rc = packet_read()
                if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                    # only raised with the buffer empty: nothing is left unseen
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
                if rc > 0:
                    return rc_handle(rc)
        finally:
            flush_acks()

    fast: Callable[[], int] | None = None
    if deliver is not None:
        put = deliver

        def fast_publishes() -> int:
            """Deliver the whole QoS 0/1 PUBLISH packets at the front of the buffer; how many.

            paho reads a packet in three or more pieces, builds a message object
            and logs it; here a packet is a few slices of the buffer.  Anything
            else (another packet type, QoS 2, a packet cut by the end of the
            read, anything malformed) stops the scan and is left to paho.
            """
            buf = reader.buf
            pos = reader.pos
            end = len(buf)
            done = 0
            while pos < end:
                command = buf[pos]
                qos = (command >> 1) & 3
                if command >> 4 != 3 or qos == 3 or qos == 2:
                    break
                length, i, shift = 0, pos + 1, 0
                while i < end and shift < 28:
                    byte = buf[i]
                    i += 1
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                else:
                    break  # the length runs past the read, or over four bytes
                stop = i + length
                if stop > end or length < 2:
                    break
                topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
                body = topic_end + 2 if qos else topic_end
                if topic_end == i + 2 or body > stop:
                    break  # an empty topic, or one longer than the packet: paho says so
                put(buf[i + 2 : topic_end].decode("utf-8", "replace"), buf[body:stop])
                if qos:
                    acks.append(bytes((_PUBACK, 2, buf[topic_end], buf[topic_end + 1])))
                pos = stop
                done += 1
            reader.pos = pos
            return done

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
