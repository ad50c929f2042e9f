"""Test helpers: a virtual sensor (`hushlight sensor` in a subprocess) and a
Mosquitto subscriber (`mosquitto_sub`) that collects what arrives."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.upy import REPO_ROOT

SITE = "test"


def mosquitto_tool(name: str) -> str:
    found = shutil.which(name)
    assert found is not None, f"{name} is missing; install mosquitto-clients"
    return found


class Sub:
    """A subscriber on `port`, optionally with a persistent session (clean
    session off, QoS 1), that keeps every message as (topic, payload)."""

    def __init__(self, port: int, topic: str, *, client_id: str | None = None) -> None:
        self.port = port
        self.topic = topic
        cmd = [mosquitto_tool("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(port)]
        cmd += ["-t", topic, "-v", "-q", "1"]
        if client_id is not None:
            cmd += ["-c", "-i", client_id]
        self.messages: list[tuple[str, Any]] = []
        self._cond = threading.Condition()
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            topic, _, payload = line.rstrip("\n").partition(" ")
            try:
                value: Any = json.loads(payload)
            except ValueError:
                value = payload
            with self._cond:
                self.messages.append((topic, value))
                self._cond.notify_all()

    def wait_for(
        self, pred: Callable[[str, Any], bool], timeout: float, what: str
    ) -> tuple[str, Any]:
        """The first message (old or new) that satisfies `pred`."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for topic, value in self.messages[seen:]:
                    if pred(topic, value):
                        return topic, value
                seen = len(self.messages)
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = self.messages[-5:]
                    raise AssertionError(f"no {what} within {timeout} s; last messages: {tail}")
                self._cond.wait(left)

    def ready(self, timeout: float = 10.0) -> None:
        """Block until the subscription is live: a probe published now arrives."""
        probe = uuid.uuid4().hex
        base = self.topic.rstrip("#").rstrip("/")
        deadline = time.monotonic() + timeout
        while True:
            subprocess.run(
                [
                    mosquitto_tool("mosquitto_pub"),
                    "-p",
                    str(self.port),
                    "-t",
                    base + "/probe",
                    "-m",
                    probe,
                ],
                check=True,
            )
            try:
                self.wait_for(lambda t, v: v == probe, 0.5, "probe")
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def of(self, leaf: str) -> list[Any]:
        with self._cond:
            return [v for t, v in self.messages if t.endswith("/" + leaf)]

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            # seen once on a loaded machine: mosquitto_sub still there 5 s after SIGTERM
            self._proc.kill()
            self._proc.wait(5)


def publish(port: int, topic: str, payload: str, *, retain: bool = False) -> None:
    cmd = [mosquitto_tool("mosquitto_pub"), "-p", str(port), "-t", topic, "-m", payload, "-q", "1"]
    subprocess.run(cmd + (["-r"] if retain else []), check=True)


class Sensor:
    """`hushlight sensor ARGS` in a subprocess; stdout and stderr go to files."""

    def __init__(self, tmp: Path, *args: str, stdin: Any = subprocess.DEVNULL) -> None:
        self.log = tmp / f"sensor-{uuid.uuid4().hex[:6]}.log"
        self.err = self.log.with_suffix(".err")
        with self.log.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tools.cli", "sensor", *args],
                cwd=REPO_ROOT,
                stdout=out,
                stderr=err,
                stdin=stdin,
            )

    def console_path(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.err.read_text().splitlines():
                if line.startswith("console: "):
                    return line.split(" ", 1)[1]
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no console path on stderr: {self.err.read_text()}")

    def firmware_pid(self, timeout: float = 20.0) -> int:
        """Pid of the MicroPython process the wrapper runs."""
        deadline = time.monotonic() + timeout
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        while time.monotonic() < deadline:
            kids = path.read_text().split()
            if kids:
                return int(kids[0])
            time.sleep(0.05)
        raise AssertionError("the wrapper started no firmware process")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """Power loss: the wrapper and the firmware die at once.  The wrapper goes
        first, or it would boot the killed firmware again as after a crash, and
        that child would outlive it."""
        if self.proc.poll() is None:
            firmware = None
            with contextlib.suppress(AssertionError, OSError):
                firmware = self.firmware_pid(1.0)
            self.proc.kill()
            self.proc.wait()
            if firmware is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(firmware, signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(errors="replace") + self.err.read_text(errors="replace")
