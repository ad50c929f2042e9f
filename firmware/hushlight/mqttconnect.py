"""Connection set-up of hushlight.mqtt: socket, TLS, CONNECT and CONNACK,
subscriptions, the end of a connection.

Runs once per connection: `MQTTClient._connect` loads this module for each
attempt and drops it again (hushlight.once), so a sensor that stays
connected for weeks does not keep this code in its heap; the set-up's
packets (hushlight.mqttsetup) come and go with it.
"""

import asyncio
import socket
import time
from errno import (
    EACCES,
    ECONNABORTED,
    ECONNREFUSED,
    EHOSTUNREACH,
    EINPROGRESS,
    EINVAL,
    ENOTCONN,
    ETIMEDOUT,
)

from hushlight import once
from hushlight.mqtt import RX_SIZE, TX_SIZE, _read_exact, _Refused, _stream_of
from hushlight.mqttcodec import utf8

packets = once("mqttsetup")

CONNACK_ERRORS = {
    1: "the broker does not speak MQTT 3.1.1",
    2: "the broker rejected the client id",
    3: "the MQTT service is unavailable",
    4: "the broker rejected the user name or password; check mqtt_user and mqtt_password",
    # Mosquitto answers a wrong password with 5, not 4
    5: "the broker refused authorisation; check mqtt_user, mqtt_password and the user's ACL",
}


def _open_socket(c):
    s = _raw_socket(c)
    if c.ssl_cafile:
        if c._ssl_ctx is None:
            c._ssl_ctx = _tls_context(c, s)
        s = c._ssl_ctx.wrap_socket(
            s, server_hostname=c.server_hostname or c.host, do_handshake_on_connect=False
        )
        s.setblocking(False)
    return s


def _raw_socket(c):
    if c.socket_factory is not None:
        return c.socket_factory(c.host, c.port)
    try:
        ai = socket.getaddrinfo(c.host, c.port, 0, socket.SOCK_STREAM)[0]
    except OSError as e:
        raise OSError(EINVAL, "cannot resolve %r (%s); check the broker's host name" % (c.host, e))
    s = socket.socket(ai[0], ai[1], ai[2])
    s.setblocking(False)
    try:
        s.connect(ai[-1])
    except OSError as e:
        if e.errno != EINPROGRESS:
            s.close()
            raise
    return s


def _tls_context(c, s):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # MicroPython's SSLContext has verify_mode; its stubs lack it
    ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]
    try:
        ctx.load_verify_locations(cadata=_ca_der(c.ssl_cafile))
    except (OSError, ValueError) as e:
        s.close()
        raise OSError(
            EINVAL,
            "the CA file %s cannot be used (%s); provision the broker's CA again"
            % (c.ssl_cafile, describe(e)),
        )
    return ctx


async def connect(c):
    """Open the link of MQTTClient `c` and get its CONNACK (its `_connect`)."""
    c._close()
    c._sock = _open_socket(c)
    c._stream = _stream_of(c._sock)
    c._down = asyncio.Event()
    c._unacked = {}
    c._ping_sent = None
    will = None
    if c.will_topic is not None:
        will = (c.will_topic, c.will_payload, c.will_qos, c.will_retain)
    pkt = packets.connect_packet(
        c.client_id, c.keepalive, c.clean_session, will, c.user, c.password
    )
    c._stream.write(pkt)
    await c._stream.drain()
    c.stats["bytes_out"] += len(pkt)
    # CONNACK: 0x20, 2, session present, return code (section 3.2)
    rx = c._rxmv
    await _read_exact(c, rx[:4])
    code = packets.connack_code(c._rx)
    if code < 0:
        raise OSError(
            ECONNABORTED, "the broker answered CONNECT with packet type 0x%02x" % c._rx[0]
        )
    if code:
        c.last_error = "the broker refused the connection: %s (CONNACK code %d)" % (
            CONNACK_ERRORS.get(code, "unknown reason"),
            code,
        )
        raise _Refused(code)
    now = time.ticks_ms()
    c._last_tx = now
    c._last_rx = now
    c._link = True


def _ca_der(path):
    """The CA certificate of a PEM or DER file, as DER.

    MicroPython's mbedtls is built without PEM parsing on some ports (the
    unix port among them), so a PEM file (what provisioning writes) is
    decoded here.  Only the first certificate of a PEM file is used: a
    sensor pins exactly one CA."""
    with open(path, "rb") as f:
        data = f.read()
    begin = b"-----BEGIN CERTIFICATE-----"
    start = data.find(begin)
    if start < 0:
        return data  # DER already
    end = data.find(b"-----END CERTIFICATE-----", start)
    if end < 0:
        raise ValueError("%s has no END CERTIFICATE line; provision the CA file again" % path)
    import binascii

    return binascii.a2b_base64(b"".join(data[start + len(begin) : end].split()))


async def subscribe(c, topic, qos):
    """MQTTClient.subscribe of client `c` (a connection's set-up)."""
    if not c._link:
        raise OSError(ENOTCONN, "MQTT not connected")
    t = utf8(topic)
    async with c._sub_lock:
        pid = c._next_pid()
        pkt = packets.subscribe_packet(pid, t, qos)
        c._suback.clear()
        c._suback_pid = pid
        await c._send(pkt)
        try:
            await asyncio.wait_for_ms(c._suback.wait(), c.keepalive * 1000)
        except asyncio.TimeoutError:
            c._down.set()
            raise OSError(ETIMEDOUT, "no SUBACK for %r within %d s" % (topic, c.keepalive))
        if not c._link or c._down.is_set():
            raise OSError(ENOTCONN, "MQTT link dropped while subscribing to %r" % (topic,))
        code = c._suback_code
        if code == 0x80:
            raise OSError(
                EACCES, "the broker refused the subscription to %r; check the ACL" % (topic,)
            )
        return code


async def disconnect(c):
    """MQTTClient.disconnect of client `c` (the end of a connection)."""
    c._stop = True
    if c._link:
        try:
            await c._send(packets.DISCONNECT_PACKET)
        except OSError:
            pass
    c._down.set()
    c._close()


def init(c, client_id, host, port, settings):
    """MQTTClient.__init__ of client `c`: its settings, checked, and its
    buffers, locks and counters."""
    get = settings.pop
    keepalive = get("keepalive", 30)
    will_qos = get("will_qos", 1)
    backoff_min_ms = get("backoff_min_ms", 500)
    backoff_max_ms = get("backoff_max_ms", 30000)
    if not (
        1 <= keepalive <= 65535 and will_qos in (0, 1) and 0 < backoff_min_ms <= backoff_max_ms
    ):
        _refuse(keepalive, will_qos, backoff_min_ms, backoff_max_ms)
    c.client_id = utf8(client_id)
    c.host = host
    c.port = port
    c.user = get("user", None)
    c.password = get("password", None)
    c.keepalive = keepalive
    c.ssl_cafile = get("ssl_cafile", None)
    c.server_hostname = get("server_hostname", None)
    c.clean_session = get("clean_session", False)
    c.will_topic = get("will_topic", None)
    c.will_payload = get("will_payload", None)
    c.will_retain = get("will_retain", True)
    c.will_qos = will_qos
    c.backoff_min_ms = backoff_min_ms
    c.backoff_max_ms = backoff_max_ms
    c.socket_factory = get("socket_factory", None)
    c.connect_timeout_ms = get("connect_timeout_ms", 10000)
    if settings:
        raise TypeError(
            "unknown MQTTClient setting %s; see MQTTClient.__init__" % ", ".join(settings)
        )

    c.on_message = None  # callable(topic: str, payload: bytes, retained: bool)
    c.on_connect = None  # (coroutine) function, run after each connect
    c.on_puback = None  # callable(pid: int)
    # callable(why: str, retry_ms: int): a connection attempt failed or the
    # link was lost, and the next attempt comes in retry_ms (console log)
    c.on_down = None
    c.stats = {
        "connects": 0,
        "reconnects": 0,
        "connect_failures": 0,
        "ping_timeouts": 0,
        "published": 0,
        "acked": 0,
        "received": 0,
        "dropped_in": 0,  # incoming messages too large or failing in on_message
        "bytes_out": 0,
        "bytes_in": 0,
        "backoff_ms": 0,  # the last back-off step (its sleep is half that to all of it)
    }
    c.last_error = None  # a sentence about the last failure, for status and selftest
    # what ended the previous connection, kept through the next one (logs)
    c.previous_error = None

    c._rx = bytearray(RX_SIZE)
    c._rxmv = memoryview(c._rx)
    c._rx1 = c._rxmv[:1]
    c._rx2 = c._rxmv[:2]
    # PUBLISH packets up to TX_SIZE are assembled here and sent whole
    c._tx = bytearray(TX_SIZE)
    c._txmv = memoryview(c._tx)
    c._ack = bytearray(4)  # PUBACK, sent by the reader only
    c._topics = {}  # topic str -> encoded bytes, for the few topics a sensor uses
    c._unacked = {}  # pid -> None, QoS 1 publishes awaiting PUBACK
    c._pid = 0
    c._sock = None
    c._stream = None
    c._link = False  # socket up and CONNACK received: publish allowed
    c._ready = False  # on_connect done: connected() is True
    c._ready_event = asyncio.Event()
    c._down = asyncio.Event()  # set when the link must be dropped
    c._write_lock = asyncio.Lock()
    c._sub_lock = asyncio.Lock()
    c._suback = asyncio.Event()
    c._suback_pid = 0
    c._suback_code = 0
    c._stop = False
    c._last_tx = time.ticks_ms()
    c._last_rx = c._last_tx
    c._ping_sent = None  # ticks of the outstanding PINGREQ, or None
    c._ssl_ctx = None


def _refuse(keepalive, will_qos, backoff_min_ms, backoff_max_ms):
    """Raise ValueError for the first MQTTClient setting out of its range."""
    if not 1 <= keepalive <= 65535:
        # 0 would switch keepalive off: a dead link would then never be noticed
        raise ValueError(
            "keepalive %r s is outside 1..65535; use a few tens of seconds" % (keepalive,)
        )
    if will_qos not in (0, 1):
        raise ValueError("will_qos %r is not supported; use 0 or 1" % (will_qos,))
    raise ValueError(
        "back-off %r..%r ms is not a range; use 0 < backoff_min_ms <= backoff_max_ms"
        % (backoff_min_ms, backoff_max_ms)
    )


def describe(e):
    """A few words on exception `e` of the link, for last_error and the log."""
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    if isinstance(e, _Refused):
        return "refused, CONNACK code %d" % e.args[0]
    if isinstance(e, OSError):
        if len(e.args) > 1:  # a sentence of ours, or the TLS library's error name
            return str(e.args[1])
        if e.errno == ECONNREFUSED:
            return "connection refused (nothing listens on that port: is the broker running?)"
        if e.errno == EHOSTUNREACH:
            return "host unreachable (check the network and the broker's address)"
    return "%s %s" % (type(e).__name__, e)
