"""An MQTT broker in Python (amqtt) on a free loopback port, for the demo.

`hushlight demo` must work on a machine with nothing installed but the
project's Python packages, so it cannot count on Mosquitto.  amqtt is a
complete MQTT 3.1.1 broker (QoS 0-2, retained messages, last wills,
persistent sessions) written in asyncio; it is far slower than Mosquitto but
a street of seven sensors is a few dozen messages a second.

Two ways to run it:

- in-process: ``async with EmbeddedBroker() as broker: ... broker.url``;
- as a child process, so its work does not stall the caller's event loop:
  ``with BrokerProcess() as broker: ... broker.url`` (runs
  ``python -m tools.embedded_broker --port N``, which prints ``listening``
  on stdout once clients can connect).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import select
import signal
import subprocess
import sys
from types import TracebackType
from typing import Any

from tools.broker import free_port
from tools.errors import ToolError

READY = "listening"


def config(port: int) -> dict[str, Any]:
    """amqtt settings: one TCP listener on 127.0.0.1:`port`, anonymous, no $SYS chatter."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        # The default plugin set logs every packet and publishes $SYS topics;
        # the demo needs neither, and both cost time on a busy machine.
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }


class EmbeddedBroker:
    """amqtt running in the current event loop; `url` once entered."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        from amqtt.broker import Broker

        # amqtt logs each connection at INFO; the demo has its own view.
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        logging.getLogger("transitions").setLevel(logging.WARNING)
        self._broker = Broker(config(self.port))
        try:
            await self._broker.start()
        except Exception as exc:
            raise ToolError(
                f"the embedded MQTT broker could not listen on port {self.port}: {exc}"
            ) from exc

    async def stop(self) -> None:
        if self._broker is not None:
            with contextlib.suppress(Exception):  # already stopping after a failed start
                await self._broker.shutdown()
            self._broker = None

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class BrokerProcess:
    """The embedded broker in a child process; started on enter, stopped on exit."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tools.embedded_broker", "--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        # The child prints READY once it listens, or exits with the reason on stderr.
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if ready and self._proc.stdout.readline().strip() == READY:
            return
        try:
            self._proc.wait(2)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ToolError(
                f"the embedded MQTT broker did not listen on port {self.port} within {timeout:g} s"
            ) from None
        err = self._proc.stderr.read() if self._proc.stderr else ""
        self.stop()
        raise ToolError(f"the embedded MQTT broker stopped at start-up: {err.strip()}")

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()
        self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> BrokerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def _serve(port: int) -> None:
    async with EmbeddedBroker(port):
        print(READY, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="run the embedded MQTT broker (amqtt) on 127.0.0.1"
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    args = parser.parse_args(argv)
    port = args.port or free_port()
    try:
        asyncio.run(_serve(port))
    except ToolError as exc:
        print(f"embedded broker: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
