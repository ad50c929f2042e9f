"""The sensor application: capture + DSP, publishing, status, config, console.

One asyncio loop runs these tasks:

- capture: read a 125 ms block from the source, run the level meter over it
  (preallocated buffer, nothing allocated per block), every `interval_s` make
  a levels record and every minute a summary, each with its `seq`, into the
  store;
- publisher: send the stored records oldest first with QoS 1 (a bounded
  window in flight), drop them from the store on PUBACK; on every new
  connection resend whatever is not acknowledged, at most `backlog_rate`
  records a second;
- status: retained status every `status_interval_s` and on change;
- the MQTT client itself (reconnects by itself), Wi-Fi and NTP on the ESP32,
  and the console.

A remote config (retained, on `.../config`) is validated whole, applied at
once (the interval at the next interval boundary; a new sample_rate by a
restart) and persisted; a bad one is reported in status `config_error` and
changes nothing.  A rev already applied is not applied again (the retained
config comes back on every connection), so console changes stay until the
next rev.

When a non-live source ends (a WAV file, stdin), the application waits until
every record is acknowledged (at most three keepalives without progress; what
is left then stays on flash for the next start), publishes its offline status
and stops.  On the unix
port `reboot` exits with status 0 after leaving a `reboot` marker file that
`hushlight sensor` takes as "start me again".
"""

import gc

# what the heap holds before the firmware's code loads (see App.heap_table)
gc.collect()
_BOOT = gc.mem_alloc()

import asyncio  # noqa: E402  # after the count above
import time  # noqa: E402

from hushlight import forget, once, platform, timesync  # noqa: E402
from hushlight.errors import ConfigError  # noqa: E402
from hushlight.sources import Pacer  # noqa: E402
from hushlight.store import LEVELS, SUMMARY  # noqa: E402
from protocol import payloads, schema  # noqa: E402

# the compiler's leftovers go now, before the application allocates
gc.collect()
_CODE = gc.mem_alloc() - _BOOT

_WINDOW = 8  # QoS 1 messages in flight at once
# a name mypy takes as true: the names of App's declared attributes
TYPE_CHECKING = False
if TYPE_CHECKING:
    from array import array
    from typing import Any

    from hushlight.commands import CalRun
    from hushlight.config import Config
    from hushlight.console import Console
    from hushlight.levelmeter import LevelMeter
    from hushlight.mqtt import MQTTClient
    from hushlight.store import Store
_SUMMARY_BLOCKS = 480  # one minute of 125 ms blocks
REBOOT_MARKER = "reboot"


def log(msg):
    print("hushlight: " + msg)


def _allocated():
    gc.collect()
    return gc.mem_alloc()


class App:
    # what hushlight.start gives an App, declared for mypy (annotations
    # without a value cost nothing on MicroPython)
    cfg: "Config"
    store: "Store"
    clock: "timesync.Clock"
    source: "Any"
    meter: "LevelMeter"
    mqtt: "MQTTClient"
    buf: "array"
    site: str
    sensor: str
    t_levels: str
    t_summary: str
    t_status: str
    t_config: str
    rate: int
    block: int
    part: int
    parts: int
    interval_blocks: int
    uptime_ms: int
    tick_seen: "Any"
    dsp_us: int
    dsp_load_last: float
    audio_blocks: int
    audio_s: int
    dropped_seen: int
    dropped_told: "Any"
    inflight: dict
    acked_early: set
    config_error: "str | None"
    last_interval: "tuple | None"
    cal: "CalRun | None"
    stopping: bool
    reboot: bool
    wake_publisher: "asyncio.Event"
    status_changed: "asyncio.Event"
    console: "Console | None"

    def __init__(self, config_path="config.json"):
        # where the heap goes, measured as it is taken (console `heap`)
        self.heap = {"code": _CODE}
        mark = _allocated()
        start = once("start")
        mark = self.count_heap("code", mark)
        start.build(self, config_path, mark)
        mark = _allocated()
        start = None
        # the topic rules and the coefficient tables are needed at start-up only
        forget("protocol.topics")
        forget("hushlight.coeffs")
        self.count_heap("code", mark)  # the start-up code is gone again

    # ---- set-up ----------------------------------------------------------

    def count_heap(self, part, since):
        """Add what the heap grew by since `since` (a mem_alloc figure) to
        `part` of the heap table; return the figure now."""
        now = _allocated()
        self.heap[part] = self.heap.get(part, 0) + now - since
        return now

    def heap_table(self):
        """Bytes of heap per part of the firmware, and free (hushlight.heap)."""
        return once("heap").table(self, _BOOT)

    # ---- status ----------------------------------------------------------

    def dsp_load(self):
        if self.audio_blocks:
            # audio_blocks counts parts of blocks (capture)
            return self.dsp_us / (self.audio_blocks * self.part * 1000000 / self.rate)
        return self.dsp_load_last

    def status_fields(self, full=False):
        gc.collect()
        f = {
            "state": "online",
            "fw": platform.FW_VERSION,
            "uptime_s": self.uptime() // 1000,
            "rssi": platform.rssi(),
            "free_mem": platform.free_mem(),
            "dsp_load": round(self.dsp_load(), 4),
            "buffered": self.store.buffered(),
            "dropped": self.store.dropped,
            "calibration_offset_db": self.cfg["calibration_offset_db"],
            "config_rev": self.cfg["config_rev"],
            "config_error": self.config_error,
            "time_synced": self.clock.synced,
        }
        if full:
            f["id"] = self.sensor
            f["site"] = self.site
            f["broker_connected"] = self.mqtt.connected()
            f["rate"] = self.rate
            f["audio_s"] = self.audio_s
            f["seq"] = self.store.next[LEVELS]
        return f

    def uptime(self):
        now = time.ticks_ms()
        self.uptime_ms += time.ticks_diff(now, self.tick_seen)
        self.tick_seen = now
        return self.uptime_ms

    def roll_load(self):
        """Close a status period: its DSP load is what status reports next,
        and the counters start again (they would outgrow a small int)."""
        self.dsp_load_last = self.dsp_load()
        self.dsp_us = 0
        self.audio_blocks = 0

    def status_payload(self):
        f = self.status_fields()
        state = f.pop("state")
        return payloads.encode_status(state, **f)

    async def _publish_status(self):
        try:
            await self.mqtt.publish(self.t_status, self.status_payload(), qos=1, retain=True)
        except OSError:
            pass  # not connected: the next connection publishes a fresh one

    async def status_task(self):
        while True:
            try:
                await asyncio.wait_for(self.status_changed.wait(), self.cfg["status_interval_s"])
            except asyncio.TimeoutError:
                pass
            self.status_changed.clear()
            self.roll_load()
            self.uptime()
            if self.mqtt.connected():
                await self._publish_status()

    # ---- MQTT callbacks --------------------------------------------------

    async def _on_connect(self):
        why = self.mqtt.previous_error
        if why is None:
            log("connected to %s" % self.cfg["broker"])
        else:
            log("connected to %s again (after: %s)" % (self.cfg["broker"], why))
        # everything not acknowledged goes again, oldest first (duplicates are
        # fine: the gateway drops them by seq)
        self.inflight = {}
        self.store.rewind()
        await self._publish_status()
        await self.mqtt.subscribe(self.t_config, 1)
        self.wake_publisher.set()

    def _on_down(self, why, retry_ms):
        # the console (serial line, or the virtual sensor's stderr) says why,
        # at the back-off's pace: doubling from 0.5 s up to backoff_max_s
        log("%s; retry in %d.%d s" % (why, retry_ms // 1000, retry_ms % 1000 // 100))

    def _on_puback(self, pid):
        rec = self.inflight.pop(pid, None)
        if rec is not None:
            self.store.ack(rec[0], rec[1])
            self.wake_publisher.set()
        else:
            # maybe the record being published: its PUBACK outran publish()
            # returning the id; without this it would wait in the store (and
            # take a window slot) until the next connection
            self.acked_early.add(pid)

    def _on_message(self, topic, payload, retained):
        if topic != self.t_config or not payload:
            return  # an empty retained message only clears the topic
        once("remote").on_config(self, payload)

    # ---- config ----------------------------------------------------------

    def set_config(self, key, value):
        """Console `set`: the same validation as a remote config."""
        once("remote").set_config(self, key, value)

    # ---- calibration -------------------------------------------------------

    def start_calibration(self, blocks):
        # (the run keeps hushlight.commands loaded while it lasts)
        self.cal = once("commands").CalRun(blocks)
        return self.cal

    def end_calibration(self):
        self.cal = None

    def request_reboot(self):
        self.reboot = True
        self.stopping = True

    # ---- capture -----------------------------------------------------------

    async def capture(self):
        # Every per-block number stays a small int on the ESP32 (31 bits): a
        # sample count or a ms epoch would outgrow that within a minute and
        # then allocate a long int per block.  Audio time is therefore kept
        # relative to the current interval (`rel`, ms) and folded into
        # `base` (ms since start, allocates, once an interval).
        src = self.source
        meter = self.meter
        buf = self.buf
        block = self.block
        part = self.part
        parts = self.parts
        rate = self.rate
        blk1000 = block * 1000
        wdt = platform.Watchdog()
        live = src.live
        # live sources bring their own pace; the pacer paces the others
        pacer = Pacer(0 if live else self.cfg["speed"], time.ticks_ms, time.ticks_diff)
        live_clock = live or self.cfg["speed"] == 1
        ticks_us = time.ticks_us
        ticks_diff = time.ticks_diff
        start_ms = self.clock.now_ms()
        base = 0  # audio ms at the start of this interval
        rel = 0  # audio ms since then
        acc = 0  # sub-ms remainder, in 1/rate ms
        interval_blocks = self.interval_blocks
        in_interval = 0
        in_minute = 0
        minute_start = 0
        flags = 0
        block_us = blk1000 * 1000 // rate
        last_read = ticks_us()
        while not self.stopping:
            if not live:
                # a paced source hands a block over once it has "been heard",
                # as a microphone does: its end time must have come
                due = pacer.due_in_ms(rel + (acc + blk1000) // rate)
                await asyncio.sleep_ms(due if due > 0 else 0)
            # the block, part by part through the one small buffer
            p = 0
            while p < parts:
                if live:
                    if not await src.aread_block(buf, part):
                        break
                    t = ticks_us()
                    # (a file played slower than asked loses nothing: no overload)
                    if ticks_diff(t, last_read) > 3 * block_us:
                        # the loop stalled for more than the I2S DMA buffer
                        # holds (4 blocks, sources.I2SSource): audio was lost
                        flags |= schema.FLAG_OVERLOAD
                    last_read = t
                elif not src.read_block(buf, part):
                    break
                p += 1
                t = ticks_us()
                meter.process_part(buf, part, p == parts)
                self.dsp_us += ticks_diff(ticks_us(), t)
                self.audio_blocks += 1
                if self.dsp_us > 0x20000000:
                    # a busy DSP over a long status period: halve both counts
                    # (their ratio is the load) before dsp_us outgrows a small
                    # int (2**30 us, 18 min), which would allocate every part
                    self.dsp_us >>= 1
                    self.audio_blocks >>= 1
            if p < parts:
                break  # the audio ended (a part-filled block is not measured)
            acc += blk1000
            rel += acc // rate
            acc %= rate
            wdt.feed()
            in_interval += 1
            in_minute += 1
            if self.cal is not None:
                self.cal.add(meter.last_block_laeq(), meter.last_block_clipped())
                flags |= schema.FLAG_CALIBRATING
            if in_minute >= _SUMMARY_BLOCKS:
                self._summary(start_ms, minute_start, base + rel)
                in_minute = 0
                minute_start = base + rel
            if in_interval >= interval_blocks:
                end = base + rel
                if live_clock and not self.clock.virtual:
                    # follow the wall clock (NTP steps, crystal drift)
                    drift = self.clock.now_ms() - (start_ms + end)
                    if drift > 2000 or drift < -2000:
                        start_ms += drift
                self._interval(start_ms, base, end, flags)
                self.audio_s = end // 1000
                pacer.advance(rel)
                base = end
                rel = 0
                flags = 0
                in_interval = 0
                # a new interval_s starts at this boundary
                interval_blocks = self.interval_blocks
            if live:
                await asyncio.sleep_ms(0)
        src.close()

    def _flags(self, flags):
        if not self.clock.synced:
            flags |= schema.FLAG_UNSYNCED_TIME
        return flags

    def _interval(self, start_ms, a0, a1, flags):
        laeq, lafmax, lceq, clipped = self.meter.take_interval()
        if clipped:
            flags |= schema.FLAG_CLIPPED
        self.last_interval = (laeq, lafmax, lceq, clipped)
        seq = self.store.next_seq(LEVELS)
        t0 = self.clock.stamp(a0, start_ms)
        t1 = self.clock.stamp(a1, start_ms)
        payload = payloads.encode_levels(seq, t0, t1, laeq, lafmax, lceq, self._flags(flags))
        self.store.add(LEVELS, seq, payload)
        self.wake_publisher.set()
        if self.store.dropped != self.dropped_seen:
            # records lost to a full buffer: tell the world, at most every 10 s
            now = time.ticks_ms()
            if time.ticks_diff(now, self.dropped_told) > 10000:
                self.dropped_seen = self.store.dropped
                self.dropped_told = now
                self.status_changed.set()
        if self.console is not None:
            self.console.on_levels(payload)

    def _summary(self, start_ms, a0, a1):
        s = self.meter.take_summary()
        seq = self.store.next_seq(SUMMARY)
        fields = {}
        for key in ("laeq", "lafmax", "lamin", "l10", "l50", "l90", "lceq", "peaks"):
            fields[key] = s[key]
        flags = self._flags(0)
        fields["flags"] = [schema.FLAGS[i] for i in range(len(schema.FLAGS)) if flags & (1 << i)]
        payload = payloads.encode_summary(
            seq=seq, t0=self.clock.stamp(a0, start_ms), t1=self.clock.stamp(a1, start_ms), **fields
        )
        self.store.add(SUMMARY, seq, payload)
        self.wake_publisher.set()

    # ---- publishing --------------------------------------------------------

    async def publisher(self):
        store = self.store
        sent_at = time.ticks_ms()
        while True:
            if not self.mqtt.connected():
                await self.mqtt.wait_connected()
                continue
            if len(self.inflight) >= _WINDOW:
                self.wake_publisher.clear()
                await self.wake_publisher.wait()
                continue
            kind = SUMMARY
            rec = store.next_unsent(SUMMARY)
            if rec is None:
                kind = LEVELS
                rec = store.next_unsent(LEVELS)
            if rec is None:
                self.wake_publisher.clear()
                await self.wake_publisher.wait()
                continue
            topic = self.t_summary if kind == SUMMARY else self.t_levels
            # from here on a PUBACK of no known record can only be this
            # record's (or a status publish's, whose id differs from it)
            self.acked_early.clear()
            try:
                pid = await self.mqtt.publish(topic, rec[1], qos=1)
            except OSError:
                continue  # the link dropped; _on_connect rewinds
            if pid in self.acked_early:
                self.acked_early.clear()
                store.ack(kind, rec[0])
            else:
                self.inflight[pid] = (kind, rec[0])
            # bounded rate: backlog_rate records per second of audio time
            speed = self.cfg["speed"] if not self.source.live else 1
            if speed > 0:
                gap = int(1000 / (self.cfg["backlog_rate"] * max(speed, 1)))
                wait = gap - time.ticks_diff(time.ticks_ms(), sent_at)
                if wait > 0:
                    await asyncio.sleep_ms(wait)
            sent_at = time.ticks_ms()

    # ---- run ---------------------------------------------------------------

    async def run(self):
        cfg = self.cfg
        from hushlight import net

        log("sensor %s of site %s: connecting to %s" % (self.sensor, self.site, cfg["broker"]))
        tasks = [
            asyncio.create_task(net.keep_connected(cfg["wifi_ssid"], cfg["wifi_password"], log)),
            asyncio.create_task(
                timesync.ntp_task(self.clock, cfg["ntp_host"], cfg["ntp_resync_s"], log)
            ),
            asyncio.create_task(self.mqtt.run()),
            asyncio.create_task(self.publisher()),
            asyncio.create_task(self.status_task()),
        ]
        if cfg["console"] != "off":
            mark = _allocated()
            from hushlight.console import Console

            self.console = Console(self, cfg["console"])
            self.count_heap("console", mark)
            tasks.append(asyncio.create_task(self.console.run()))
        log("heap: " + once("heap").line(self, _BOOT))
        await self.capture()
        if not self.stopping:
            # the audio ended (a file, stdin): deliver everything, then say goodbye
            await self.deliver_rest()
        await self.goodbye()
        for t in tasks:
            t.cancel()

    async def deliver_rest(self):
        await once("ending").deliver_rest(self)

    async def goodbye(self):
        await once("ending").goodbye(self)

    def shutdown(self):
        self.store.flush()
        if self.reboot and platform.UNIX:
            with open(REBOOT_MARKER, "w") as f:
                f.write("1")


def release_heap_lock():
    """Give back a heap lock that an interrupt left behind.

    On the unix port an interrupt (SIGINT from `hushlight sensor`) that lands
    while the collector holds the heap lock unwinds without releasing it; the
    next allocation then fails with "heap is locked" and the stop path would
    lose the records still in RAM.  The process is about to flush and exit, so
    the lock is released for that; a heap that allocates is left alone.
    """
    import micropython

    for _ in range(8):
        try:
            bytearray(16)
            return
        except MemoryError:
            micropython.heap_unlock()


def main():
    import sys

    try:
        app = App()
    except ConfigError as e:
        print("hushlight: error: %s" % e, file=sys.stderr)
        if platform.ESP32:
            # nothing sensible to run: wait for a technician, then try again
            time.sleep(60)
            platform.reset()
        raise SystemExit(2)
    status = 0
    try:
        asyncio.run(app.run())
    except KeyboardInterrupt:
        release_heap_lock()
        log("stopping")
    except Exception as e:  # a bug or an exhausted heap: never sit there deaf
        log("fatal: %r" % (e,))
        sys.print_exception(e)
        status = 1
    app.shutdown()
    if app.reboot or (status and platform.ESP32):
        platform.reset()
    raise SystemExit(status)
