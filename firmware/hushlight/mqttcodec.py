"""MQTT 3.1.1 packets of a running link, encoded into and decoded from
buffers the caller owns: PUBLISH, PUBACK, PINGREQ, and the checks on what
comes in.  Pure functions, no I/O and no allocation on the publish path;
the session around them is hushlight.mqtt, the packets of a connection's
set-up are in hushlight.mqttsetup.

Section numbers are those of the MQTT 3.1.1 standard (OASIS, 2014).
"""

from micropython import const

# packet types (section 2.2.1), with the fixed flags of section 2.2.2
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBACK = const(0x90)
PINGREQ_PACKET = b"\xc0\x00"


def encode_length(buf, n):
    """Write remaining length `n` into buf[1:] (section 2.2.3); return the header size."""
    i = 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            buf[i] = b | 0x80
            i += 1
        else:
            buf[i] = b
            return i + 1


def utf8(s):
    return s if isinstance(s, (bytes, bytearray)) else s.encode()


def publish_head(buf, t, qos, retain, pid, plen):
    """Write a PUBLISH up to its payload into `buf` (section 3.3): fixed
    header, topic `t` (bytes), packet id `pid` when `qos` is 1, for a payload
    of `plen` bytes; return where the payload starts."""
    buf[0] = _PUBLISH | (qos << 1) | (1 if retain else 0)
    i = encode_length(buf, 2 + len(t) + plen + (2 if qos else 0))
    buf[i] = len(t) >> 8
    buf[i + 1] = len(t) & 0xFF
    buf[i + 2 : i + 2 + len(t)] = t
    i += 2 + len(t)
    if qos:
        buf[i] = pid >> 8
        buf[i + 1] = pid & 0xFF
        i += 2
    return i


def puback(buf, pid):
    """Write the PUBACK of packet id `pid` into buf[:4] (section 3.4)."""
    buf[0] = _PUBACK
    buf[1] = 2
    buf[2] = pid >> 8
    buf[3] = pid & 0xFF


def malformed(kind, size):
    """Whether a packet of type byte `kind` is too short, at `size` bytes,
    for what its type must hold (section 3)."""
    t = kind & 0xF0
    if t == _PUBLISH:
        # topic length, and a packet id at QoS 1 and 2
        return size < (4 if kind & 0x06 else 2)
    return size < (2 if t == _PUBACK else 3 if t == _SUBACK else 0)


def packet_id(buf, i=0):
    return buf[i] << 8 | buf[i + 1]
