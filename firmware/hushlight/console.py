"""The technician console: one command line in, JSON object lines out.

Runs on the serial REPL line (stdin/stdout) on the ESP32 and on a
pseudo-terminal on the unix port (`console: fd:N`).  The protocol (shared with
tools/console.py):

    status | levels | get KEY | set KEY VALUE | cal REF_DB [SECONDS] | selftest | heap | reboot

Every reply line is one JSON object with "cmd" and "ok" ("error": a sentence
when ok is false); other lines (log output) are for humans and ignored by
tools.  `{"cmd":"hello",...}` is printed when the console starts.

The console never blocks the DSP: input is polled, and output to a terminal
nobody reads is dropped instead of waited for.
"""

import json
import math
import select
import sys

from hushlight import platform
from hushlight.config import DEFAULTS
from hushlight.errors import ConfigError

COMMANDS = ("status", "levels", "get", "set", "cal", "selftest", "heap", "reboot")
_LINE_MAX = 256
# below the INMP441's self-noise (~33 dB(A)) a working microphone cannot go
_MIC_ALIVE_DB = 25.0
_CAL_SPREAD_DB = 0.5


class _Stdio:
    def __init__(self):
        self.rx = sys.stdin.buffer
        self.tx = sys.stdout.buffer
        self.one = bytearray(1)

    def read(self, buf):
        # the REPL stream hands out what it has one byte at a time
        n = self.rx.readinto(self.one)
        if n:
            buf[0] = self.one[0]
        return n or 0

    def write(self, data):
        return self.tx.write(data)


class _Fd:
    def __init__(self, fd):
        self.rx = open(fd, "r+b")
        self.tx = self.rx

    def read(self, buf):
        try:
            return self.rx.readinto(buf) or 0
        except OSError:
            return 0

    def write(self, data):
        return self.tx.write(data)


def parse_value(text):
    """VALUE of `set`: JSON, or a bare word taken as a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class Console:
    def __init__(self, app, spec):
        self.app = app
        self.io = _Stdio() if spec == "stdio" else _Fd(int(spec[3:]))
        self.poll = select.poll()
        self.poll.register(self.io.rx, select.POLLIN)
        self.rbuf = bytearray(64)
        self.line = bytearray()
        self.lines = []
        self.streaming = False
        self.torn = False
        self.dropped = 0

    # ---- transport ---------------------------------------------------

    def send(self, obj):
        self.write_raw(json.dumps(obj).encode())

    def write_raw(self, data):
        try:
            if self.torn:
                # a line was cut short by a full terminal buffer: end it so
                # the next object starts on a line of its own
                data = b"\n" + data
            n = self.io.write(data + b"\n")
            self.torn = n is not None and 0 < n < len(data) + 1
            if not n:
                self.dropped += 1
        except OSError:
            self.dropped += 1

    def _pump(self):
        """Move whatever input is waiting into complete lines."""
        while True:
            ready = self.poll.poll(0)
            if not ready or not ready[0][1] & select.POLLIN:
                return
            n = self.io.read(self.rbuf)
            if not n:
                return
            for i in range(n):
                c = self.rbuf[i]
                if c == 10:
                    text = bytes(self.line).decode("utf-8", "replace").strip()
                    self.line = bytearray()
                    self.lines.append(text)
                elif len(self.line) < _LINE_MAX:
                    self.line.append(c)

    async def next_line(self):
        import asyncio

        while not self.lines:
            self._pump()
            if not self.lines:
                await asyncio.sleep_ms(20)
        return self.lines.pop(0)

    # ---- commands ----------------------------------------------------

    async def run(self):
        self.send({"cmd": "hello", "ok": True, "fw": platform.FW_VERSION, "id": self.app.cfg["id"]})
        while True:
            line = await self.next_line()
            if not line:
                continue
            try:
                await self.handle(line)
            except Exception as e:  # a console bug must not take the sensor down
                word = line.split()[0]
                self.send(
                    {
                        "cmd": word,
                        "ok": False,
                        "error": "internal error %r; please report it" % (e,),
                    }
                )

    async def handle(self, line):
        parts = line.split(None, 2)
        word = parts[0]
        args = parts[1:]
        if word == "status":
            reply = {"cmd": "status", "ok": True}
            reply.update(self.app.status_fields(full=True))
            self.send(reply)
        elif word == "levels":
            await self.levels()
        elif word == "get":
            self.get(args)
        elif word == "set":
            self.set(args)
        elif word == "cal":
            await self.cal(line.split()[1:])
        elif word == "selftest":
            self.selftest()
        elif word == "heap":
            reply = {"cmd": "heap", "ok": True}
            reply.update(self.app.heap_table())
            self.send(reply)
        elif word == "reboot":
            self.send({"cmd": "reboot", "ok": True})
            self.app.request_reboot()
        else:
            self.fail(word, "unknown command %r; commands: %s" % (word, ", ".join(COMMANDS)))

    def fail(self, cmd, error):
        self.send({"cmd": cmd, "ok": False, "error": error})

    def get(self, args):
        keys = sorted(DEFAULTS)
        if len(args) != 1 or args[0] not in DEFAULTS:
            what = "a key" if not args else "unknown key %r" % args[0]
            self.fail("get", "%s; give one of %s" % (what, ", ".join(keys)))
            return
        key = args[0]
        self.send({"cmd": "get", "ok": True, "key": key, "value": self.app.cfg.public(key)})

    def set(self, args):
        if len(args) != 2:
            self.fail("set", "usage: set KEY VALUE, e.g. set interval_s 1")
            return
        key = args[0]
        value = parse_value(args[1])
        try:
            self.app.set_config(key, value)
        except ConfigError as e:
            self.fail("set", str(e))
            return
        self.send({"cmd": "set", "ok": True, "key": key, "value": self.app.cfg.public(key)})

    async def levels(self):
        self.streaming = True
        try:
            await self.next_line()  # any line ends the stream
        finally:
            self.streaming = False
        self.send({"cmd": "levels", "ok": True, "done": True})

    def on_levels(self, payload):
        """Called by the application with each interval record's JSON."""
        if self.streaming:
            self.write_raw(b'{"cmd":"levels","ok":true,' + payload[1:])

    async def cal(self, args):
        import asyncio

        try:
            ref = float(args[0])
            seconds = float(args[1]) if len(args) > 1 else 10.0
            if len(args) > 2:
                raise ValueError
        except (IndexError, ValueError):
            self.fail("cal", "usage: cal REF_DB [SECONDS], e.g. cal 94 10 for a 94 dB calibrator")
            return
        if not 40.0 <= ref <= 140.0:
            self.fail(
                "cal",
                "reference level %r dB is not a calibrator level; give 40..140 (94 or 114 usually)"
                % ref,
            )
            return
        if not 1.0 <= seconds <= 60.0:
            self.fail(
                "cal", "measuring time %r s is out of range; give 1..60 s (10 is usual)" % seconds
            )
            return
        app = self.app
        run = app.start_calibration(int(seconds * 8))
        shown = 0.0
        while not run.done():
            await asyncio.sleep_ms(100)
            p = run.progress()
            if p - shown >= 0.1 and p < 1.0:
                shown = p
                self.send({"cmd": "cal", "ok": True, "progress": round(p, 2)})
        app.end_calibration()
        if run.clipped:
            self.fail(
                "cal",
                "the signal clipped in %d samples; the calibrator is too loud for the "
                "microphone, use a lower level" % run.clipped,
            )
            return
        spread = run.spread()
        if spread > _CAL_SPREAD_DB:
            self.fail(
                "cal",
                "the level varied by %.2f dB (over %.1f dB allowed), not a steady tone; "
                "seat the calibrator on the microphone and retry" % (spread, _CAL_SPREAD_DB),
            )
            return
        measured = run.mean_db()
        old = app.cfg["calibration_offset_db"]
        new = round(old + ref - measured, 2)
        try:
            app.set_config("calibration_offset_db", new)
        except ConfigError as e:
            self.fail("cal", "measured %.2f dB for a %.2f dB reference: %s" % (measured, ref, e))
            return
        self.send(
            {
                "cmd": "cal",
                "ok": True,
                "done": True,
                "measured_db": round(measured, 2),
                "ref_db": ref,
                "offset_db": new,
                "previous_offset_db": old,
            }
        )

    def selftest(self):
        app = self.app
        results = []

        def check(name, ok, detail):
            results.append((name, ok, detail))

        last = app.last_interval
        if last is None:
            wait = "no interval measured yet; wait %s s and retry" % app.cfg["interval_s"]
            check("mic", False, wait)
            check("clipping", False, wait)
        else:
            laeq, clipped = last[0], last[3]
            if laeq >= _MIC_ALIVE_DB:
                check("mic", True, "the microphone delivers a signal (LAeq %.1f dB(A))" % laeq)
            else:
                check(
                    "mic",
                    False,
                    "no signal from the microphone (LAeq %.1f dB(A), below its self-noise); "
                    "check the I2S wiring and the L/R pin" % laeq,
                )
            if clipped:
                check(
                    "clipping",
                    False,
                    "%d samples clipped in the last interval; the sound is too loud for "
                    "the microphone" % clipped,
                )
            else:
                check("clipping", True, "no clipping in the last interval")
        load = app.dsp_load() * 100
        if load <= 25:
            check("dsp_load", True, "the DSP takes %.1f %% of real time (limit 25 %%)" % load)
        else:
            check(
                "dsp_load",
                False,
                "the DSP takes %.1f %% of real time, over the 25 %% limit; "
                "lower sample_rate" % load,
            )
        broker = app.cfg["broker"]
        if app.mqtt.connected():
            check("broker", True, "connected to %s" % broker)
        else:
            check(
                "broker",
                False,
                "not connected to %s; check the network, the broker address and "
                "the credentials" % broker,
            )
        if app.clock.synced:
            check("time", True, "the clock is synced")
        else:
            check(
                "time",
                False,
                "the clock is not synced yet; check that %s is reachable" % app.cfg["ntp_host"],
            )
        all_ok = True
        for name, ok, detail in results:
            all_ok = all_ok and ok
            self.send({"cmd": "selftest", "check": name, "ok": ok, "detail": detail})
        self.send({"cmd": "selftest", "ok": all_ok, "done": True})


class CalRun:
    """Collects the 125 ms levels of a calibration measurement.

    The levels are kept in integer hundredths of a dB (the meter's
    resolution): a float32 is 8 micro-dB coarse at 94 dB, so 94.1 - 93.9 came
    out 0.199997 in floats, and an energy sum of 10**9.4-sized terms keeps
    fewer digits still."""

    def __init__(self, blocks):
        self.blocks = blocks
        self.levels = []  # hundredths of a dB
        self.clipped = 0

    def add(self, level_db, clipped):
        if len(self.levels) < self.blocks:
            self.levels.append(int(round(level_db * 100)))
            self.clipped += clipped

    def done(self):
        return len(self.levels) >= self.blocks

    def progress(self):
        return len(self.levels) / self.blocks

    def spread(self):
        return (max(self.levels) - min(self.levels)) / 100

    def mean_db(self):
        # energy mean, as a sound level meter averages, taken relative to the
        # loudest block: each term is at most 1 and the sum keeps its digits
        top = max(self.levels)
        s = 0.0
        for h in self.levels:
            s += 10 ** ((h - top) / 1000)
        return (top + 1000 * math.log10(s / len(self.levels))) / 100
