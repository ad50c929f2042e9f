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
import select
import sys

from hushlight import once, platform

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
        self.send({"cmd": "hello", "ok": True, "fw": platform.FW_VERSION, "id": self.app.sensor})
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
        elif word == "set":
            once("remote").console_set(self, args)
        elif word in ("get", "cal", "selftest"):
            # the rarer commands, loaded for this one use (hushlight.commands)
            commands = once("commands")
            if word == "get":
                commands.get(self, args)
            elif word == "selftest":
                commands.selftest(self)
            else:
                done = await commands.cal(self, line.split()[1:])
                commands = None  # gone before the new offset is checked and stored
                if done is not None:
                    once("remote").calibrated(self, *done)
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


def __getattr__(name):
    # the calibration run lives with the rarer commands (hushlight.commands),
    # the `set` parser with the settings changes (hushlight.remote)
    if name == "CalRun":
        return once("commands").CalRun
    if name == "parse_value":
        return once("remote").parse_value
    raise AttributeError(name)
