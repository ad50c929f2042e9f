"""Start-up of the sensor application: the App's parts, built from config.json.

Runs once per boot: `hushlight.app` imports this module for that and drops
it again, so its code does not stay in the heap.  Each part's share of the
heap is counted as it is built (console `heap`, hushlight.app.App.heap_table).
"""

import array
import asyncio
import time

from hushlight import coeffs, once, timesync
from hushlight.capture import Capture
from hushlight.config import Config
from hushlight.levelmeter import LevelMeter
from hushlight.mqtt import MQTTClient
from hushlight.publisher import Publisher
from hushlight.sources import block_len, open_source
from hushlight.store import Store
from protocol import payloads, topics

# An ESP32 without PSRAM leaves the firmware about 110 KiB of heap, so a
# 125 ms block (24 KiB of int32 words at 48 kHz) is read and measured in
# parts of at most this many words (LevelMeter.process_part).
PART_MAX = 240
# the file and stream sources read their PCM bytes through this much
RAW_BYTES = 2048


def part_len(rate):
    """Words in a part of a block: the most whole sub-blocks of the meter
    (its Fast time weighting steps) that divide the block and fit PART_MAX."""
    block = block_len(rate)
    sub = coeffs.CHAINS[rate][12]
    k = block // sub
    while k * sub > PART_MAX or (block // sub) % k:
        k -= 1
    return k * sub


def build(app, config_path, mark):
    """Give `app` its config, store, clock, topics, capture (audio, meter),
    publisher and MQTT client; `mark` is the heap's mem_alloc figure before
    it started."""
    app.cfg = Config(config_path)
    cfg = app.cfg
    mark = app.count_heap("config", mark)
    app.store = Store(".", cfg["buffer_records"])
    mark = app.count_heap("store", mark)
    app.clock = timesync.Clock(cfg["time_origin"])
    app.site = cfg["site"]
    app.sensor = cfg["id"]
    app.publisher = pub = Publisher()
    pub.app = app
    pub.t_levels = topics.levels(app.site, app.sensor)
    pub.t_summary = topics.summary(app.site, app.sensor)
    pub.inflight = {}
    pub.acked_early = set()
    pub.wake = asyncio.Event()
    app.t_status = topics.status(app.site, app.sensor)
    app.t_config = topics.config(app.site, app.sensor)
    # uptime is summed from tick differences: ticks_ms wraps every 12.4
    # days on the ESP32, and a lamp post runs for years
    app.uptime_ms = 0
    app.tick_seen = time.ticks_ms()
    app.config_error = None
    app.stopping = False
    app.reboot = False
    app.status_changed = asyncio.Event()
    app.console = None
    mark = _open_audio(app, mark)
    app.mqtt = _make_client(app)
    app.count_heap("mqtt", mark)
    # an update's state, read (hushlight.otatrial) once an update ever came;
    # a staging a reboot cut short resumes
    app.ota = app.ota_task = app.ota_stage = None
    try:
        open("ota.json").close()
        once("otatrial").boot(app)
    except OSError:
        pass


def _open_audio(app, mark):
    cfg = app.cfg
    app.capture = cap = Capture()
    cap.app = app
    cap.interval_blocks = int(cfg["interval_s"] * 8)
    cap.dsp_us = 0
    cap.dsp_load_last = 0.0
    cap.audio_blocks = 0
    cap.audio_s = 0
    cap.last_interval = None
    cap.cal = None
    cap.dropped_seen = 0
    cap.dropped_told = time.ticks_add(time.ticks_ms(), -20000)
    rate = cfg["sample_rate"]
    spec = cfg["source"]
    # only the file and stream sources read bytes
    raw = bytearray(RAW_BYTES) if spec == "stdin" or spec.startswith("wav:") else None
    # (the block sizes the I2S DMA buffer; reads come in parts of it)
    cap.source = open_source(cfg.values, block_len(rate), raw)
    if cap.source.rate != rate:
        # a file brings its own rate, and with it the block length
        rate = cap.source.rate
        cap.source.close()
        cap.source = open_source(cfg.values, block_len(rate), raw)
    cap.rate = rate
    cap.block = block_len(rate)
    cap.part = part_len(rate)
    cap.parts = cap.block // cap.part
    cap.buf = array.array("i", bytes(4 * cap.part))
    mark = app.count_heap("audio", mark)
    cap.meter = LevelMeter(
        rate=rate,
        sensitivity_dbfs=cfg["sensitivity_dbfs"],
        calibration_offset_db=cfg["calibration_offset_db"],
        peak_threshold_db=cfg["peak_threshold_db"],
    )
    return app.count_heap("meter", mark)


def _make_client(app):
    cfg = app.cfg
    # one broker or several to fail over across, read once into a small tuple
    tls, brokers = once("configcheck").parse_brokers(cfg["broker"])
    _, host, port = brokers[0]
    will = payloads.encode_status("offline")
    kw = {
        "user": cfg["mqtt_user"],
        "password": cfg["mqtt_password"],
        "keepalive": cfg["keepalive_s"],
        "clean_session": False,
        "will_topic": app.t_status,
        "will_payload": will,
        "will_retain": True,
        "will_qos": 1,
        "backoff_max_ms": cfg["backoff_max_s"] * 1000,
        "brokers": brokers,
    }
    if tls:
        kw["ssl_cafile"] = cfg["ca_file"] or "ca.pem"
        # None: the host of the broker in use (hushlight.mqttconnect)
        kw["server_hostname"] = cfg["server_hostname"]
    client = MQTTClient(app.site + "-" + app.sensor, host, port, **kw)
    client.on_connect = app._on_connect
    client.on_message = app._on_message
    client.on_puback = app.publisher.on_puback
    client.on_down = app._on_down
    return client
