"""MQTT 3.1.1 packets of a connection's set-up: CONNECT, CONNACK,
SUBSCRIBE and DISCONNECT.  Pure functions, no I/O; hushlight.mqttconnect
loads this module for each packet and drops it again (hushlight.once), as
the packets of a running link (hushlight.mqttcodec) stay.
"""

from micropython import const

from hushlight.mqttcodec import encode_length, utf8

# packet types (section 2.2.1), with the fixed flags of section 2.2.2
_CONNECT = const(0x10)
_CONNACK = const(0x20)
_SUBSCRIBE = const(0x82)
DISCONNECT_PACKET = b"\xe0\x00"


def connect_packet(client_id, keepalive, clean_session, will, user, password):
    """CONNECT (section 3.1); `will`: None or (topic, payload, qos, retain)."""
    flags = 0x02 if clean_session else 0
    client_id = utf8(client_id)
    size = 10 + 2 + len(client_id)
    will_topic = will_payload = None
    if will is not None:
        will_topic = utf8(will[0])
        will_payload = utf8(will[1] or b"")
        flags |= 0x04 | (will[2] << 3) | (0x20 if will[3] else 0)
        size += 2 + len(will_topic) + 2 + len(will_payload)
    if user is not None:
        user = utf8(user)
        flags |= 0x80
        size += 2 + len(user)
        if password is not None:
            password = utf8(password)
            flags |= 0x40
            size += 2 + len(password)
    else:
        password = None
    pkt = bytearray(5 + size)
    pkt[0] = _CONNECT
    i = encode_length(pkt, size)
    pkt[i : i + 10] = b"\x00\x04MQTT\x04\x00\x00\x00"
    pkt[i + 7] = flags
    pkt[i + 8] = keepalive >> 8
    pkt[i + 9] = keepalive & 0xFF
    i += 10
    for field in (client_id, will_topic, will_payload, user, password):
        if field is not None:
            pkt[i] = len(field) >> 8
            pkt[i + 1] = len(field) & 0xFF
            pkt[i + 2 : i + 2 + len(field)] = field
            i += 2 + len(field)
    return memoryview(pkt)[:i]


def connack_code(buf):
    """The return code of the CONNACK in buf[:4] (section 3.2), or -1 when
    those bytes are no CONNACK."""
    if buf[0] != _CONNACK or buf[1] != 2:
        return -1
    return buf[3]


def subscribe_packet(pid, t, qos):
    """SUBSCRIBE to one topic `t` (bytes) with packet id `pid` (section 3.8)."""
    size = 2 + 2 + len(t) + 1
    pkt = bytearray(5 + size)
    pkt[0] = _SUBSCRIBE
    n = encode_length(pkt, size)
    pkt[n] = pid >> 8
    pkt[n + 1] = pid & 0xFF
    pkt[n + 2] = len(t) >> 8
    pkt[n + 3] = len(t) & 0xFF
    pkt[n + 4 : n + 4 + len(t)] = t
    pkt[n + 4 + len(t)] = qos
    return memoryview(pkt)[: n + size]
