"""Client of the sensor's technician console (the serial REPL line).

The protocol (the firmware side is `firmware/hushlight/console.py`): one
command line out, reply lines back, each ONE JSON object with ``cmd`` and
``ok`` (and ``error`` when ``ok`` is false).  Lines that are not JSON objects
(log output) are skipped.  The same client drives an ESP32 on /dev/ttyUSB0
and a virtual sensor's pseudo-terminal (`hushlight sensor --console`).

    with Console("/dev/ttyUSB0") as con:
        [status] = con.command("status")
        for rec in con.stream("levels", count=5):
            print(rec["laeq"])
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Final

import serial

from tools.errors import ToolError

__all__ = ["STREAMING", "Console", "is_final"]

# commands whose replies come as several lines ending with "done"
STREAMING: Final = ("levels", "cal", "selftest")
BAUDRATE: Final = 115200


def is_final(word: str, reply: dict[str, Any]) -> bool:
    """True if `reply` is the last line the command `word` gets."""
    if reply.get("done"):
        return True
    if "check" in reply or "progress" in reply:
        return False
    return word not in STREAMING or reply.get("ok") is False


class Console:
    """A console line to one sensor.  `timeout` (s) bounds the wait for each reply line."""

    def __init__(self, port: str, timeout: float = 5.0, baudrate: int = BAUDRATE) -> None:
        self.port = port
        self.timeout = timeout
        try:
            self._serial = serial.Serial(port, baudrate, timeout=0.1)
        except (serial.SerialException, OSError) as exc:
            raise ToolError(
                f"cannot open the console port {port}: {exc}; check the cable and the port "
                "name (hushlight sensor --console prints its port on stderr)"
            ) from exc
        # lines from before we came (log output, replies to somebody else) are stale
        self._serial.reset_input_buffer()
        self._pending = b""

    def close(self) -> None:
        self._serial.close()

    def __enter__(self) -> Console:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def send(self, line: str) -> None:
        if "\n" in line or "\r" in line:
            raise ToolError(f"console command {line!r} spans lines; send one line at a time")
        try:
            self._serial.write(line.encode() + b"\n")
            self._serial.flush()
        except (serial.SerialException, OSError) as exc:
            raise ToolError(f"cannot write to the console port {self.port}: {exc}") from exc

    def read_object(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next JSON object line, or None when `timeout` passes without one."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            nl = self._pending.find(b"\n")
            if nl >= 0:
                raw, self._pending = self._pending[:nl], self._pending[nl + 1 :]
                obj = _parse(raw)
                if obj is not None:
                    return obj
                continue
            if time.monotonic() >= deadline:
                return None
            try:
                chunk = self._serial.read(self._serial.in_waiting or 1)
            except (serial.SerialException, OSError) as exc:
                raise ToolError(f"cannot read the console port {self.port}: {exc}") from exc
            self._pending += chunk

    def _reply(self, word: str, line: str, timeout: float | None) -> dict[str, Any]:
        while True:
            obj = self.read_object(timeout)
            if obj is None:
                wait = self.timeout if timeout is None else timeout
                raise ToolError(
                    f"no reply to {line!r} from {self.port} within {wait:g} s; check that "
                    "the sensor runs and that this port is its console"
                )
            if obj.get("cmd") == word:
                return obj

    def command(self, line: str, timeout: float | None = None) -> list[dict[str, Any]]:
        """Send one command; return its reply objects, the final one last.

        `timeout` bounds the wait for each line (a `cal` takes its measuring
        time between progress lines of ~1 s).  `levels` never ends by itself:
        use `stream`."""
        word = _word(line)
        if word == "levels":
            raise ToolError("the levels command streams until stopped; use Console.stream")
        self.send(line)
        replies = []
        while True:
            obj = self._reply(word, line, timeout)
            replies.append(obj)
            if is_final(word, obj):
                return replies

    def stream(
        self, line: str = "levels", count: int | None = None, seconds: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield the records `levels` streams, until `count` records or
        `seconds` have passed or the caller stops iterating; then stop the
        stream on the sensor."""
        word = _word(line)
        self.send(line)
        end = None if seconds is None else time.monotonic() + seconds
        got = 0
        try:
            while (count is None or got < count) and (end is None or time.monotonic() < end):
                obj = self._reply(word, line, None)
                if obj.get("ok") is False or obj.get("done"):
                    return
                got += 1
                yield obj
        finally:
            self.send("")
            # the sensor confirms; records already on the way are skipped
            while True:
                tail = self.read_object()
                if tail is None or (tail.get("cmd") == word and tail.get("done")):
                    break

    def wait_hello(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the greeting a sensor prints when its console starts."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            obj = self.read_object(deadline - time.monotonic())
            if obj is not None and obj.get("cmd") == "hello":
                return obj
        raise ToolError(
            f"the sensor on {self.port} did not greet within {timeout:g} s; is it starting?"
        )


def _word(line: str) -> str:
    parts = line.split()
    if not parts:
        raise ToolError("empty console command; give one of status, levels, get, set, ...")
    return parts[0]


def _parse(raw: bytes) -> dict[str, Any] | None:
    text = raw.strip()
    if not text.startswith(b"{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None  # a log line that happens to start with a brace, or a torn line
    return obj if isinstance(obj, dict) else None
