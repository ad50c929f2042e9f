"""MQTTClient.__init__ (hushlight.mqtt): the client's settings, checked,
and its buffers, locks and counters.  Runs once per client, loaded for that
and dropped again (hushlight.once), so its code does not stay in the heap.
"""

import asyncio
import time

from hushlight.mqtt import RX_SIZE, TX_SIZE
from hushlight.mqttcodec import utf8


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
    # every broker to try, in order, as (url, host, port); host and port are the first
    c.brokers = get("brokers", None) or (("%s:%d" % (host, port), host, port),)
    c.url, c.host, c.port = c.brokers[0]
    c._at = 0  # the index of the broker in use in `brokers`
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
