"""An MQTT 3.1.1 client for the sensor firmware, on MicroPython's asyncio:
the session (connect, keepalive, in-flight packet ids, reconnect) around
the packet codec (hushlight.mqttcodec; a connection's set-up and its
packets: hushlight.mqttconnect, hushlight.mqttsetup).

Written for a microcontroller: packets are read into one preallocated
buffer with `readinto` and parsed through memoryview slices; a PUBLISH is
assembled in another and written with one call; PUBACK and PINGREQ use
fixed bytes; nothing grows with uptime (a test checks the heap).  Every
network failure ends in a reconnect, never in an exception out of `run()`;
`last_error` says what went wrong until the next successful connection.

Who retransmits: the client remembers the packet ids of QoS 1 messages
awaiting PUBACK (`inflight()`), not their payloads (RAM is scarce and the
application's store already holds every record).  When the link drops those
ids are forgotten and `on_connect` runs after the next connection; the
application resends what was not acknowledged (hushlight.app rewinds its
store).  That keeps the at-least-once guarantee MQTT 3.1.1 section 4.4 asks
for; the receiver drops duplicates by `seq`.

Keepalive: a PINGREQ goes out when nothing was sent or received for a
quarter of the keepalive; a PINGRESP (or any packet) must come back within
half the keepalive, else the link counts as dead (`stats["ping_timeouts"]`)
and is dropped, so a silent Wi-Fi or broker failure is found in at most
three quarters of the keepalive.  A publish that cannot get its bytes out
within one keepalive (the peer stopped reading) fails with OSError and the
link is rebuilt.  The broker publishes the last will after 1.5 keepalives
without hearing from us.

Reconnect: capped exponential back-off from `backoff_min_ms` to
`backoff_max_ms` with random jitter (half fixed, half random), so a street
of sensors does not hammer a broker that comes back.

TLS (`ssl_cafile`, PEM or DER): the broker's certificate must chain to that
CA and match `server_hostname` (default: the host).

`socket_factory(host, port)`, if given, returns the connected socket-like
object to talk to (a non-blocking object asyncio can poll), instead of
resolving and connecting here; TLS is layered on it as on a plain socket.
Tests and simulations use it instead of the radio.
"""

import asyncio
import random
import sys
import time
from errno import (
    ECONNABORTED,
    ECONNRESET,
    ENOBUFS,
    ENOTCONN,
    ETIMEDOUT,
)

from micropython import const

from hushlight import mqttcodec, once

# packet types (MQTT 3.1.1 section 2.2.1) the reader tells apart
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBACK = const(0x90)
_PINGRESP = const(0xD0)

# a name mypy takes as true: the types of MQTTClient's declared attributes; a const, so that
# MicroPython compiles the block below away (its imports would cost heap)
TYPE_CHECKING = const(0)
if TYPE_CHECKING:
    from typing import Any

# Largest packet we accept whole: a 2 KiB payload (protocol.MAX_PAYLOAD)
# with the longest config topic of our contract (93 bytes), its length and
# packet id.  Larger packets are read through and dropped (QoS 1 ones still
# acknowledged, or the broker would redeliver them forever).
RX_SIZE = const(2176)
# PUBLISH packets up to this size go out in one write, larger ones in pieces:
# a record or a status fits, and the heap of an ESP32 without PSRAM is small
TX_SIZE = const(512)
# on_connect (birth status, subscriptions) must be done within this many
# keepalives; each of its network waits is bounded by one
_ON_CONNECT_KEEPALIVES = const(3)
_HEAD = const(256)  # start of an oversized packet kept to acknowledge it


class MQTTClient:
    # messages on topics ending so reach on_message as a memoryview of the
    # receive buffer, valid during the call only, instead of a copy: an
    # update's chunks (protocol.ota, 1 KiB each), written to flash before
    # the handler returns; a copy of each would need a free 1 KiB block
    # many times a second while the heap is at its tightest
    views = "/ota/chunk"

    # set by hushlight.mqttinit, with what they hold
    client_id: bytes
    brokers: tuple  # (url, host, port) of each broker, tried in this order
    url: str  # the broker in use (or being tried): its URL as configured
    host: str
    port: int
    _at: int
    user: "str | None"
    password: "str | None"
    keepalive: int
    ssl_cafile: "str | None"
    server_hostname: "str | None"
    clean_session: bool
    will_topic: "str | None"
    will_payload: "Any"
    will_retain: bool
    will_qos: int
    backoff_min_ms: int
    backoff_max_ms: int
    socket_factory: "Any"
    connect_timeout_ms: int
    on_message: "Any"
    on_connect: "Any"
    on_puback: "Any"
    on_down: "Any"
    stats: dict
    last_error: "str | None"
    previous_error: "str | None"
    _rx: bytearray
    _rxmv: memoryview
    _rx1: memoryview
    _rx2: memoryview
    _tx: bytearray
    _txmv: memoryview
    _ack: bytearray
    _topics: dict
    _unacked: dict
    _pid: int
    _sock: "Any"
    _stream: "Any"
    _link: bool
    _ready: bool
    _ready_event: "asyncio.Event"
    _down: "asyncio.Event"
    _write_lock: "asyncio.Lock"
    _sub_lock: "asyncio.Lock"
    _suback: "asyncio.Event"
    _suback_pid: int
    _suback_code: int
    _stop: bool
    _last_tx: "Any"
    _last_rx: "Any"
    _ping_sent: "Any"
    _ssl_ctx: "Any"

    def __init__(self, client_id, host, port=1883, **settings):
        """`settings`: user, password, keepalive (s, 30), ssl_cafile,
        server_hostname, clean_session (False), will_topic, will_payload,
        will_retain (True), will_qos (1), backoff_min_ms (500),
        backoff_max_ms (30000), socket_factory, connect_timeout_ms (10000),
        brokers (a tuple of (url, host, port) to fail over across, the
        first being `host` and `port`; default: that broker alone).
        Set up by hushlight.mqttinit, so that its code leaves the heap."""
        once("mqttinit").init(self, client_id, host, port, settings)

    # ------------------------------------------------------------ public API

    def connected(self):
        return self._ready

    async def wait_connected(self):
        while not self._ready:
            await self._ready_event.wait()

    def inflight(self):
        return len(self._unacked)

    async def run(self):
        """Connect and stay connected until `disconnect()`; never raises on network errors."""
        self._stop = False
        delay = self.backoff_min_ms
        ever = False
        failed = 0  # connection attempts failed in a row
        while not self._stop:
            try:
                await asyncio.wait_for_ms(self._connect(), self.connect_timeout_ms)
            except Exception as e:  # any failure to connect is retried
                failed += 1
                # what failed, and the next broker of a list (hushlight.mqttwhy,
                # loaded on failure): the shortest pause while a round of the
                # list lasts, the back-off once every broker failed in turn
                if once("mqttwhy").connect_failed(self, e, failed):
                    await self._backoff(self.backoff_min_ms)
                else:
                    await self._backoff(delay)
                    delay = min(delay * 2, self.backoff_max_ms)
                continue
            failed = 0
            if self._stop:  # disconnect() was called while we connected
                self._close()
                break
            connected_at = time.ticks_ms()
            self.stats["connects"] += 1
            if ever:
                self.stats["reconnects"] += 1
            ever = True
            self.previous_error = self.last_error
            self.last_error = None
            try:
                await self._session()
            except Exception as e:  # the link is dropped and rebuilt
                if self.last_error is None:  # the reader may have said why already
                    self.last_error = "connection to %s:%d lost: %s" % (
                        self.host,
                        self.port,
                        _describe(e),
                    )
            finally:
                self._close()
            if not self._stop:
                # A session that lasted a keepalive or more starts the back-off
                # afresh; a shorter one keeps it growing, so a broker that
                # accepts and drops us at once (two sensors sharing a client
                # id take the session from each other) is not hammered.
                if time.ticks_diff(time.ticks_ms(), connected_at) >= self.keepalive * 1000:
                    delay = self.backoff_min_ms
                await self._backoff(delay)
                delay = min(delay * 2, self.backoff_max_ms)

    async def publish(self, topic, payload, qos=0, retain=False):
        """Send one message; return its packet id (0 for QoS 0).

        Raises OSError when not connected or when the link fails while
        sending: the caller keeps the message and sends it again later."""
        if not self._link:
            raise OSError(ENOTCONN, "MQTT not connected")
        if qos not in (0, 1):
            raise ValueError("qos %r is not supported; use 0 or 1" % (qos,))
        if isinstance(payload, str):
            payload = payload.encode()  # its length on the wire is in bytes
        t = self._topics.get(topic)
        if t is None:
            t = mqttcodec.utf8(topic)
            if len(t) > TX_SIZE - 9:
                raise ValueError(
                    "topic of %d bytes is longer than %d; use a shorter one" % (len(t), TX_SIZE - 9)
                )
            if len(self._topics) < 8:
                self._topics[topic] = t
        pid = 0
        n = 0
        lock = self._write_lock
        try:
            # acquire/release by hand: `async with` makes two more coroutine
            # objects per message
            await lock.acquire()
            try:
                # the shared buffer is filled under the lock: another task may
                # be publishing concurrently
                w = self._stream
                if w is None:  # the link dropped while we waited for the lock
                    raise OSError(ENOTCONN, "MQTT not connected")
                if qos:
                    # taken under the lock, so the id belongs to the link it
                    # goes out on; registered before the write, as the PUBACK
                    # can arrive while we drain
                    pid = self._next_pid()
                    self._unacked[pid] = None
                i = mqttcodec.publish_head(self._tx, t, qos, retain, pid, len(payload))
                n = i + len(payload)
                if n <= TX_SIZE:
                    # the whole packet in one write: one syscall, one segment
                    self._tx[i:n] = payload
                    w.write(self._txmv[:n])
                else:
                    w.write(self._txmv[:i])
                    w.write(payload)
                if getattr(w, "out_buf", True):
                    await self._drain(w)
                else:
                    # the socket took everything at once (the usual case):
                    # only yield, so a caller's publish loop cannot starve the
                    # other tasks; sleep_ms(0) allocates nothing
                    await asyncio.sleep_ms(0)
            finally:
                lock.release()
        except Exception as e:
            # (no "from e": MicroPython warns on the console about chaining)
            self._unacked.pop(pid, None)
            if self.last_error is None:
                self.last_error = "publishing to %s:%d failed: %s" % (
                    self.host,
                    self.port,
                    _describe(e),
                )
            self._down.set()
            raise OSError(_errno(e), "MQTT publish failed: %s" % _describe(e))
        self._last_tx = time.ticks_ms()
        self.stats["bytes_out"] += n
        self.stats["published"] += 1
        return pid

    async def subscribe(self, topic, qos=1):
        """Subscribe and wait for the SUBACK; return the granted QoS.

        Raises OSError when not connected, when no SUBACK comes within the
        keepalive, or when the broker refuses the subscription."""
        # part of a connection's set-up: its code loads with it (hushlight.mqttconnect)
        return await once("mqttconnect").subscribe(self, topic, qos)

    async def disconnect(self):
        """Send DISCONNECT (the broker then drops the last will) and stop `run()`."""
        await once("mqttconnect").disconnect(self)

    # ------------------------------------------------------------ connection

    async def _connect(self):
        # the set-up's code is loaded for each connection (hushlight.mqttconnect)
        await once("mqttconnect").connect(self)

    async def _session(self):
        reader = asyncio.create_task(_read_loop(self))
        try:
            if self.on_connect is not None:
                pending = self.on_connect()
                if pending is not None:  # a coroutine function; a plain one returns None
                    # Bounded as a whole: until it returns, no keepalive runs,
                    # so a wait in it that never ends (a lock, a broker that
                    # accepted and then stalls) would leave the sensor
                    # connected and mute for good.  Its own steps have
                    # shorter bounds; this catches whatever they miss.
                    limit = _ON_CONNECT_KEEPALIVES * self.keepalive * 1000
                    try:
                        await asyncio.wait_for_ms(pending, limit)
                    except asyncio.TimeoutError:
                        self.last_error = "connection set-up with %s:%d stalled for %d s" % (
                            self.host,
                            self.port,
                            limit // 1000,
                        )
                        raise OSError(ETIMEDOUT, self.last_error) from None
            if self._down.is_set():
                raise OSError(ECONNRESET, "link dropped during on_connect")
            self._ready = True
            self._ready_event.set()
            await _keepalive_loop(self)
        finally:
            reader.cancel()
            self._link = False
            self._ready = False
            self._ready_event.clear()

    def _close(self):
        self._link = False
        self._ready = False
        self._ready_event.clear()
        if self._sock is not None:
            try:
                self._sock.close()
            except Exception:  # closing a broken socket may fail; it is gone anyway
                pass
        self._sock = None
        self._stream = None
        # a subscribe waiting for its SUBACK must not wait for the timeout
        self._suback.set()

    async def _backoff(self, delay):
        self.stats["backoff_ms"] = delay
        # half fixed, half random ("equal jitter")
        half = delay // 2
        wait = half + (half * random.getrandbits(16) >> 16)
        if self.on_down is not None:
            why = self.last_error or "connection to %s:%d lost" % (self.host, self.port)
            if len(self.brokers) > 1:
                why += "; trying %s next" % self.url
            self.on_down(why, wait)
        await asyncio.sleep_ms(wait)

    def _next_pid(self):
        if len(self._unacked) >= 65535:
            raise OSError(ENOBUFS, "65535 messages await PUBACK; no packet id is free")
        pid = self._pid
        while True:
            pid = pid % 65535 + 1  # 1..65535; 0 is not a packet id
            if pid not in self._unacked:
                self._pid = pid
                return pid

    # ------------------------------------------------------------ I/O

    async def _send(self, mv):
        try:
            async with self._write_lock:
                w = self._stream
                if w is None:
                    raise OSError(ENOTCONN, "MQTT not connected")
                w.write(mv)
                await self._drain(w)
        except Exception as e:
            self._down.set()
            raise OSError(_errno(e), "MQTT write failed: %s" % _describe(e))
        self._last_tx = time.ticks_ms()
        self.stats["bytes_out"] += len(mv)

    async def _drain(self, w):
        # Bounded: when the peer stops reading, the send buffer fills and a
        # plain drain() would wait forever, holding the write lock; closing
        # the socket does not wake it on MicroPython.
        try:
            await asyncio.wait_for_ms(w.drain(), self.keepalive * 1000)
        except asyncio.TimeoutError:
            raise OSError(ETIMEDOUT, "send stalled for %d s" % self.keepalive) from None


# ------------------------------------------------------------ keepalive and reader


async def _keepalive_loop(c):
    """Keep the link of client `c` alive until it is to be dropped (module docstring)."""
    ka = c.keepalive * 1000
    idle_limit = ka // 4
    step = max(idle_limit // 4, 50)
    while not c._down.is_set():
        try:
            await asyncio.wait_for_ms(c._down.wait(), step)
            break
        except asyncio.TimeoutError:
            pass
        now = time.ticks_ms()
        if c._ping_sent is not None:
            if time.ticks_diff(now, c._ping_sent) >= ka // 2:
                c.stats["ping_timeouts"] += 1
                raise OSError(ETIMEDOUT, "no PINGRESP within %d ms" % (ka // 2))
        elif time.ticks_diff(now, c._last_rx) >= ka:
            # nothing heard for a whole keepalive and no ping could go
            # out: a publish is stuck in a full send buffer (peer gone)
            c.stats["ping_timeouts"] += 1
            raise OSError(ETIMEDOUT, "nothing received for %d ms" % ka)
        elif not c._write_lock.locked() and (
            time.ticks_diff(now, c._last_tx) >= idle_limit
            or time.ticks_diff(now, c._last_rx) >= idle_limit
        ):
            # (a writer holding the lock shows the link is busy; the ping
            # can wait, and waiting on the lock here could wait forever)
            c._ping_sent = now
            try:
                await asyncio.wait_for_ms(c._send(mqttcodec.PINGREQ_PACKET), ka // 2)
            except asyncio.TimeoutError:
                c.stats["ping_timeouts"] += 1
                raise OSError(ETIMEDOUT, "PINGREQ not sent within %d ms" % (ka // 2)) from None
    if not c._stop:
        raise OSError(ECONNRESET, "MQTT link dropped")


async def _read_exact(c, mv):
    """Fill `mv` from the link of client `c`."""
    got = 0
    n = len(mv)
    while got < n:
        stream = c._stream
        if stream is None:
            raise OSError(ENOTCONN, "MQTT not connected")
        r = await stream.readinto(mv[got:] if got else mv)
        if r is None:
            continue  # TLS: a record is not complete yet
        if r == 0:
            raise OSError(ECONNRESET, "the broker closed the connection")
        got += r
    c.stats["bytes_in"] += n


async def _read_loop(c):
    """The reader of a link: one packet after the other until the link fails."""
    try:
        while True:
            await _read_packet(c)
    except Exception as e:  # any read failure drops the link
        if not c._stop:
            c.last_error = "reading from %s:%d failed: %s" % (
                c.host,
                c.port,
                _describe(e),
            )
        c._down.set()
        # a subscribe waiting for its SUBACK need not wait for its timeout
        c._suback.set()


async def _read_packet(c):
    rx = c._rx
    mv = c._rxmv
    # every packet has a type byte and at least one length byte: read both
    # at once, then the further length bytes one at a time (section 2.2.3)
    await _read_exact(c, c._rx2)
    kind = rx[0]
    size = rx[1] & 0x7F
    shift = 0
    while rx[1] & 0x80:
        shift += 7
        if shift > 21:
            raise OSError(ECONNABORTED, "malformed remaining length")
        await _read_exact(c, c._rx1)
        rx[1] = rx[0]
        size |= (rx[1] & 0x7F) << shift
    whole = size <= RX_SIZE
    if size:
        await _read_exact(c, mv[: min(size, RX_SIZE)])
    if size > RX_SIZE:
        # read through the rest in buffer-sized chunks, keeping the start
        # (topic and packet id) in a small copy
        head = bytes(mv[:_HEAD])
        left = size - RX_SIZE
        while left:
            k = min(left, RX_SIZE)
            await _read_exact(c, mv[:k])
            left -= k
        rx[:_HEAD] = head
    c._last_rx = time.ticks_ms()
    c._ping_sent = None  # any packet proves the link alive
    t = kind & 0xF0
    # a packet shorter than its type needs would be read from stale
    # buffer bytes: the link is out of step, so drop it
    if mqttcodec.malformed(kind, size):
        raise OSError(ECONNABORTED, "malformed packet 0x%02x of %d bytes" % (kind, size))
    if t == _PUBLISH:
        await _on_publish(c, kind, size, whole)
    elif t == _PUBACK:
        pid = mqttcodec.packet_id(rx)
        if c._unacked.pop(pid, 0) is None:
            c.stats["acked"] += 1
            if c.on_puback is not None:
                try:
                    c.on_puback(pid)
                except Exception as e:  # an application bug must not cut the link
                    sys.print_exception(e)
    elif t == _SUBACK:
        if mqttcodec.packet_id(rx) == c._suback_pid:
            c._suback_code = rx[2]
            c._suback.set()
    elif t == _PINGRESP:
        pass
    else:
        raise OSError(ECONNABORTED, "unexpected packet type 0x%02x" % kind)


async def _on_publish(c, kind, size, whole):
    rx = c._rx
    qos = (kind >> 1) & 3
    tlen = mqttcodec.packet_id(rx)  # (the topic's length, a 16-bit field like an id)
    off = 2 + tlen
    pid = 0
    if qos:
        pid = mqttcodec.packet_id(rx, off)
        off += 2
    if qos > 1:
        raise OSError(ECONNABORTED, "QoS 2 delivery although we subscribe with QoS 1 at most")
    c.stats["received"] += 1
    if whole and tlen <= size and off <= size:
        if c.on_message is not None:
            try:
                topic = str(c._rxmv[2 : 2 + tlen], "utf-8")
                payload = c._rxmv[off:size]
                if not topic.endswith(c.views):
                    payload = bytes(payload)
                c.on_message(topic, payload, bool(kind & 1))
            except Exception as e:  # a bad message must not cut the link
                c.stats["dropped_in"] += 1
                sys.print_exception(e)
    else:
        c.stats["dropped_in"] += 1
    if qos:
        mqttcodec.puback(c._ack, pid)
        await c._send(memoryview(c._ack)[:4])


def _stream_of(sock):
    # MicroPython's asyncio Stream reads and writes; the CPython-shaped stubs
    # split that into StreamReader and StreamWriter, so it is left untyped
    return asyncio.StreamReader(sock)


class _Refused(OSError):
    pass


def _errno(e):
    return e.errno if isinstance(e, OSError) and e.errno else ECONNRESET


def _describe(e):
    # the sentences load when something failed (hushlight.mqttwhy)
    return once("mqttwhy").describe(e)
