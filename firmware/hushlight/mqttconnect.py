"""Connection set-up of hushlight.mqtt: socket, TLS, CONNECT and CONNACK,
subscriptions, the end of a connection.

Runs once per connection: `MQTTClient._connect` loads this module for each
attempt and drops it again (hushlight.once), so a sensor that stays
connected for weeks does not keep this code in its heap; the set-up's
packets (hushlight.mqttsetup) are loaded for each use.
"""

import asyncio
import socket
import time
from errno import (
    EACCES,
    ECONNABORTED,
    EINPROGRESS,
    EINVAL,
    ENOTCONN,
    ETIMEDOUT,
)

from hushlight import once
from hushlight.mqtt import _read_exact, _Refused, _stream_of
from hushlight.mqttcodec import utf8

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
            % (c.ssl_cafile, once("mqttwhy").describe(e)),
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
    # the set-up's packets are loaded for each use (hushlight.mqttsetup), so
    # that they do not stay in the heap through the network waits
    pkt = once("mqttsetup").connect_packet(
        c.client_id, c.keepalive, c.clean_session, will, c.user, c.password
    )
    c._stream.write(pkt)
    await c._stream.drain()
    c.stats["bytes_out"] += len(pkt)
    # CONNACK: 0x20, 2, session present, return code (section 3.2)
    rx = c._rxmv
    await _read_exact(c, rx[:4])
    code = once("mqttsetup").connack_code(c._rx)
    if code < 0:
        raise OSError(
            ECONNABORTED, "the broker answered CONNECT with packet type 0x%02x" % c._rx[0]
        )
    if code:
        # (named, as the sensor may have several brokers to try)
        c.last_error = "the broker %s:%d refused the connection: %s (CONNACK code %d)" % (
            c.host,
            c.port,
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
        pkt = once("mqttsetup").subscribe_packet(pid, t, qos)
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
            await c._send(once("mqttsetup").DISCONNECT_PACKET)
        except OSError:
            pass
    c._down.set()
    c._close()
