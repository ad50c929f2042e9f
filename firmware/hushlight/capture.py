"""Capture: read the audio block by block, measure it, and every interval
and every minute put a record (levels, summary) into the store.

The loop allocates nothing per block (a test runs it with the heap locked):
every per-block number stays a small int on the ESP32 (31 bits), so audio
time is kept relative to the current interval (`rel`, ms) and folded into
`base` (ms since start) once an interval, where allocating is allowed.
"""

import asyncio
import time

from micropython import const

from hushlight import platform
from hushlight.sources import Pacer
from hushlight.store import LEVELS, SUMMARY
from protocol import payloads, schema

_SUMMARY_BLOCKS = 480  # one minute of 125 ms blocks
# a name mypy takes as true: the types of Capture's declared attributes; a const, so that
# MicroPython compiles the block below away (its imports would cost heap)
TYPE_CHECKING = const(0)
if TYPE_CHECKING:
    from array import array
    from typing import Any

    from hushlight.app import App
    from hushlight.commands import CalRun
    from hushlight.levelmeter import LevelMeter


class Capture:
    """The audio path of an App: source, level meter, DSP load, records.

    hushlight.start gives it the attributes below (set there, not in an
    __init__ here, so that their start-up code leaves the heap with
    hushlight.start); `interval_blocks` may change while it runs (remote
    config)."""

    app: "App"
    source: "Any"
    rate: int
    block: int
    part: int  # words per part of a block (LevelMeter.process_part)
    parts: int
    buf: "array"
    meter: "LevelMeter"
    interval_blocks: int
    dsp_us: int
    dsp_load_last: float
    audio_blocks: int  # parts of blocks measured this status period
    audio_s: int
    last_interval: "tuple | None"  # (laeq, lafmax, lceq, clipped) of the last interval
    cal: "CalRun | None"  # a calibration run while one lasts
    dropped_seen: int
    dropped_told: "Any"  # ticks_ms of the last report of dropped records

    def dsp_load(self):
        if self.audio_blocks:
            return self.dsp_us / (self.audio_blocks * self.part * 1000000 / self.rate)
        return self.dsp_load_last

    def roll_load(self):
        """Close a status period: its DSP load is what status reports next,
        and the counters start again (they would outgrow a small int)."""
        self.dsp_load_last = self.dsp_load()
        self.dsp_us = 0
        self.audio_blocks = 0

    async def run(self):
        app = self.app
        clock = app.clock
        src = self.source
        meter = self.meter
        buf = self.buf
        part = self.part
        parts = self.parts
        rate = self.rate
        blk1000 = self.block * 1000
        wdt = platform.Watchdog()
        live = src.live
        speed = app.cfg["speed"]
        # live sources bring their own pace; the pacer paces the others
        pacer = Pacer(0 if live else speed, time.ticks_ms, time.ticks_diff)
        live_clock = live or speed == 1
        ticks_us = time.ticks_us
        ticks_diff = time.ticks_diff
        start_ms = clock.now_ms()
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
        while not app.stopping:
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
                if live_clock and not clock.virtual:
                    # follow the wall clock (NTP steps, crystal drift)
                    drift = clock.now_ms() - (start_ms + end)
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

    def _interval(self, start_ms, a0, a1, flags):
        app = self.app
        store = app.store
        laeq, lafmax, lceq, clipped = self.meter.take_interval()
        if clipped:
            flags |= schema.FLAG_CLIPPED
        self.last_interval = (laeq, lafmax, lceq, clipped)
        seq = store.next_seq(LEVELS)
        t0 = app.clock.stamp(a0, start_ms)
        t1 = app.clock.stamp(a1, start_ms)
        if not app.clock.synced:
            flags |= schema.FLAG_UNSYNCED_TIME
        payload = payloads.encode_levels(seq, t0, t1, laeq, lafmax, lceq, flags)
        store.add(LEVELS, seq, payload)
        app.publisher.wake.set()
        if store.dropped != self.dropped_seen:
            # records lost to a full buffer: tell the world, at most every 10 s
            now = time.ticks_ms()
            if time.ticks_diff(now, self.dropped_told) > 10000:
                self.dropped_seen = store.dropped
                self.dropped_told = now
                app.status_changed.set()
        if app.console is not None:
            app.console.on_levels(payload)

    def _summary(self, start_ms, a0, a1):
        app = self.app
        s = self.meter.take_summary()
        seq = app.store.next_seq(SUMMARY)
        fields = {}
        for key in ("laeq", "lafmax", "lamin", "l10", "l50", "l90", "lceq", "peaks"):
            fields[key] = s[key]
        flags = 0 if app.clock.synced else schema.FLAG_UNSYNCED_TIME
        fields["flags"] = [schema.FLAGS[i] for i in range(len(schema.FLAGS)) if flags & (1 << i)]
        payload = payloads.encode_summary(
            seq=seq, t0=app.clock.stamp(a0, start_ms), t1=app.clock.stamp(a1, start_ms), **fields
        )
        app.store.add(SUMMARY, seq, payload)
        app.publisher.wake.set()
