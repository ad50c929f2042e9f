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

COMMANDS = ("status", "levels", "get", "set", "cal", "selftest", "heap", "reboot")
_LINE_MAX = 256


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
        elif word in ("get", "set", "cal", "selftest"):
            # the rarer commands, loaded for this one use (hushlight.commands)
            from hushlight import once

            commands = once("commands")
            if word == "get":
                commands.get(self, args)
            elif word == "set":
                commands.set_(self, args)
            elif word == "cal":
                await commands.cal(self, line.split()[1:])
            else:
                commands.selftest(self)
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
