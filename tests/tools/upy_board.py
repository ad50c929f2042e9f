"""A board for mpremote without hardware: MicroPython's unix port behind a pseudo-terminal.

mpremote talks to a board through its raw REPL, which the unix port has too;
the port's current folder is the board's filesystem.  One thing differs: a
soft reset (Ctrl-D in the raw REPL, which mpremote sends before its first
command) ends the unix port instead of restarting it.  The board then starts
MicroPython again and says "soft reboot" and enters the raw REPL, as an ESP32
does, so mpremote runs unchanged.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import threading
import tty
from pathlib import Path
from types import TracebackType

from tools import upy

_BANNER_END = b">>> "
_RAW_REPL = b"\x01"


class UnixBoard:
    """`with UnixBoard(folder) as board:` mpremote reaches it at `board.port`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = ""
        self._host_master, self._host_slave = pty.openpty()
        self._upy_master, self._upy_slave = pty.openpty()
        for fd in (self._host_slave, self._upy_slave):
            tty.setraw(fd)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self.boots = 0

    def __enter__(self) -> UnixBoard:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = os.ttyname(self._host_slave)
        self._start()
        self._wait_banner(forward=False)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for fd in (self._host_master, self._host_slave, self._upy_master, self._upy_slave):
            os.close(fd)

    def _start(self) -> None:
        self.boots += 1
        self._proc = subprocess.Popen(
            [upy.micropython_binary(), "-X", f"heapsize={upy.HEAP_SIZE}"],  # its REPL
            stdin=self._upy_slave,
            stdout=self._upy_slave,
            stderr=self._upy_slave,
            cwd=self.root,
            env=upy.firmware_env(),
            start_new_session=True,
        )

    def _wait_banner(self, *, forward: bool) -> None:
        """Read MicroPython's greeting up to its prompt (passing it on when `forward`)."""
        seen = b""
        while not seen.endswith(_BANNER_END):
            ready, _, _ = select.select([self._upy_master], [], [], 10.0)
            if not ready:
                raise AssertionError(f"MicroPython gave no REPL prompt; it said {seen!r}")
            chunk = os.read(self._upy_master, 4096)
            seen += chunk
            if forward:
                os.write(self._host_master, chunk)

    def _pump(self) -> None:
        host, board = self._host_master, self._upy_master
        while not self._stop.is_set():
            ready, _, _ = select.select([host, board], [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                os.write(board if fd == host else host, data)
            assert self._proc is not None
            if board not in ready and self._proc.poll() is not None:
                # a soft reset ended the unix port: boot again, greet, raw REPL
                os.write(host, b"MPY: soft reboot\r\n")
                self._start()
                self._wait_banner(forward=False)
                os.write(board, _RAW_REPL)
