"""Connection set-up of hushlight.mqtt: socket, TLS, CONNECT and CONNACK.

Runs once per connection: `MQTTClient._connect` loads this module for each
attempt and drops it again (hushlight.once), so a sensor that stays
connected for weeks does not keep this code in its heap.
"""

import asyncio
import socket
import time
from errno import EACCES, ECONNABORTED, EINPROGRESS, EINVAL, ENOTCONN, ETIMEDOUT

from micropython import const

from hushlight.mqtt import _describe, _encode_length, _Refused, _stream_of, _utf8

# packet types (MQTT 3.1.1 section 2.2.1), with the fixed flags of section 2.2.2
_CONNECT = const(0x10)
_CONNACK = const(0x20)
_SUBSCRIBE = const(0x82)
_DISCONNECT_PACKET = b"\xe0\x00"

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
            % (c.ssl_cafile, _describe(e)),
        )
    return ctx


def _connect_packet(c):
    flags = 0x02 if c.clean_session else 0
    size = 10 + 2 + len(c.client_id)
    will_topic = will_payload = user = password = None
    if c.will_topic is not None:
        will_topic = _utf8(c.will_topic)
        will_payload = _utf8(c.will_payload or b"")
        flags |= 0x04 | (c.will_qos << 3) | (0x20 if c.will_retain else 0)
        size += 2 + len(will_topic) + 2 + len(will_payload)
    if c.user is not None:
        user = _utf8(c.user)
        flags |= 0x80
        size += 2 + len(user)
        if c.password is not None:
            password = _utf8(c.password)
            flags |= 0x40
            size += 2 + len(password)
    pkt = bytearray(5 + size)
    pkt[0] = _CONNECT
    i = _encode_length(pkt, size)
    pkt[i : i + 10] = b"\x00\x04MQTT\x04\x00\x00\x00"
    pkt[i + 7] = flags
    pkt[i + 8] = c.keepalive >> 8
    pkt[i + 9] = c.keepalive & 0xFF
    i += 10
    for field in (c.client_id, will_topic, will_payload, user, password):
        if field is not None:
            pkt[i] = len(field) >> 8
            pkt[i + 1] = len(field) & 0xFF
            pkt[i + 2 : i + 2 + len(field)] = field
            i += 2 + len(field)
    return memoryview(pkt)[:i]


async def connect(c):
    """Open the link of MQTTClient `c` and get its CONNACK (its `_connect`)."""
    c._close()
    c._sock = _open_socket(c)
    c._stream = _stream_of(c._sock)
    c._down = asyncio.Event()
    c._unacked = {}
    c._ping_sent = None
    pkt = _connect_packet(c)
    c._stream.write(pkt)
    await c._stream.drain()
    c.stats["bytes_out"] += len(pkt)
    # CONNACK: 0x20, 2, session present, return code (section 3.2)
    rx = c._rxmv
    await c._read_exact(rx[:4])
    if c._rx[0] != _CONNACK or c._rx[1] != 2:
        raise OSError(
            ECONNABORTED, "the broker answered CONNECT with packet type 0x%02x" % c._rx[0]
        )
    code = c._rx[3]
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
    t = _utf8(topic)
    async with c._sub_lock:
        pid = c._next_pid()
        pkt = bytearray(5 + 2 + 2 + len(t) + 1)
        pkt[0] = _SUBSCRIBE
        size = 2 + 2 + len(t) + 1
        n = _encode_length(pkt, size)
        pkt[n] = pid >> 8
        pkt[n + 1] = pid & 0xFF
        pkt[n + 2] = len(t) >> 8
        pkt[n + 3] = len(t) & 0xFF
        pkt[n + 4 : n + 4 + len(t)] = t
        pkt[n + 4 + len(t)] = qos
        c._suback.clear()
        c._suback_pid = pid
        await c._send(memoryview(pkt)[: n + size])
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
            await c._send(_DISCONNECT_PACKET)
        except OSError:
            pass
    c._down.set()
    c._close()


def refuse(keepalive, will_qos, backoff_min_ms, backoff_max_ms):
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
