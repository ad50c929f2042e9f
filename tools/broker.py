"""Run a private Mosquitto broker: for tests, benchmarks and local trials.

Each instance listens on its own free loopback port with its own config,
persistence and log files in a temporary folder, so a test session can stop
and restart it (a broker outage) without touching the system's Mosquitto.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tools.errors import ToolError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise ToolError(
            "mosquitto is not installed; run `make test` (it installs it) "
            "or `apt-get install mosquitto`"
        )
    return found


class Mosquitto:
    """A Mosquitto process on 127.0.0.1.

    ``port`` is the plain MQTT listener.  ``tls`` = (cafile, certfile, keyfile)
    adds a TLS listener on ``tls_port``.  ``password_file``/``acl_file`` turn
    off anonymous access.  ``extra`` lines are appended to the config.
    Persistence is on, so retained messages and persistent sessions survive
    :meth:`restart`.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        tls: tuple[Path, Path, Path] | None = None,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.port = port or free_port()
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.password_file = password_file
        self.acl_file = acl_file
        self.extra = extra
        self._dir = Path(tempfile.mkdtemp(prefix="hushlight-mosquitto-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = self._dir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"

    def _config(self) -> str:
        lines = [
            # Started as root, Mosquitto drops to the `mosquitto` user, which
            # cannot write the private temporary folder: no log, and no
            # persistence file, so retained messages and sessions would not
            # survive restart().  Stay root instead (a loopback test broker).
            *(["user root"] if os.geteuid() == 0 else []),
            "persistence true",
            f"persistence_location {self._dir}/",
            "autosave_interval 1",
            f"log_dest file {self._log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            "set_tcp_nodelay true",
            f"listener {self.port} 127.0.0.1",
        ]
        if self.password_file:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl_file:
            lines.append(f"acl_file {self.acl_file}")
        if self.tls:
            cafile, certfile, keyfile = self.tls
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {cafile}",
                f"certfile {certfile}",
                f"keyfile {keyfile}",
            ]
            # password_file is global (no per_listener_settings): set once above
            if not self.password_file:
                lines.append("allow_anonymous true")
        lines += list(self.extra)
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        conf = self._dir / "mosquitto.conf"
        conf.write_text(self._config())
        self._proc = subprocess.Popen(
            [find_mosquitto(), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise ToolError(f"mosquitto exited at start-up: {err.strip()} {self.log_tail()}")
            if all(_listening(p) for p in ports):
                return
            time.sleep(0.02)
        raise ToolError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, so it saves its persistence file)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
