"""The hardware-in-the-loop suite: one set of tests, two targets.

By default the target is a virtual sensor: the firmware in the MicroPython
unix port (`hushlight sensor --console`), its console on a pseudo-terminal,
publishing to a private Mosquitto started here.  With ``--port /dev/ttyUSB0``
the target is a real ESP32 running hushlight; give ``--broker-url`` too (the
broker the board is provisioned for, reachable from this machine and open
to an anonymous subscriber) for the tests that watch MQTT.

Which test runs where:

- `hardware` tests need a real board; they are skipped only when ``--port``
  is not given;
- `virtual_only` tests need what only the virtual sensor allows (feeding it a
  WAV file, killing its process, stopping its broker); they are skipped on a
  real board with the reason;
- everything else runs on both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interpreters import on_interpreter, upy_interpreter  # noqa: F401  (fixtures)
from tests.tools.virtual import Sensor
from tools.broker import Mosquitto
from tools.console import Console

SITE = "hil"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hushlight hardware-in-the-loop")
    group.addoption(
        "--port", default=None, help="console port of a real ESP32 (default: a virtual sensor)"
    )
    group.addoption(
        "--broker-url",
        default=None,
        help="with --port: mqtt://127.0.0.1:PORT, a broker on this machine the board publishes to",
    )
    group.addoption(
        "--calibrator-db",
        default=None,
        help="with --port: level of the sound calibrator seated on the microphone (e.g. 94.0)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "virtual_only: needs the virtual sensor (WAV input, process, broker control)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    real = config.getoption("--port") is not None
    for item in items:
        if not real and "hardware" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs a real ESP32: run with --port PORT"))
        if real and "virtual_only" in item.keywords:
            item.add_marker(
                pytest.mark.skip(reason="needs the virtual sensor (WAV input or process control)")
            )


@dataclass
class Target:
    """What a test talks to: a console port, and the broker the sensor publishes to."""

    port: str
    sensor: str
    site: str
    broker_port: int | None  # None: MQTT not reachable from the tests (real board, no URL)
    virtual: Sensor | None = None
    state_dir: Path | None = None

    def console(self, timeout: float = 20.0) -> Console:
        return Console(self.port, timeout=timeout)

    def kill(self) -> None:
        """Cut the virtual sensor's power: SIGKILL, no goodbye (and nothing boots
        it again, as `hushlight sensor` does after a crash)."""
        assert self.virtual is not None
        self.virtual.kill()


@pytest.fixture(scope="session")
def hil_broker(request: pytest.FixtureRequest) -> Iterator[Mosquitto | None]:
    if request.config.getoption("--port") is not None:
        yield None
        return
    with Mosquitto() as broker:
        yield broker


def start_virtual(
    tmp: Path,
    broker: Mosquitto,
    sensor: str,
    *audio: str,
    keepalive: int = 5,
    wait_levels: bool = True,
) -> Target:
    """A virtual sensor with its console; by default returns once it has measured a record."""
    state = tmp / f"state-{sensor}"
    args = ["--id", sensor, "--site", SITE, "--broker", broker.url, "--state-dir", str(state)]
    args += ["--rate", "16000", "--keepalive", str(keepalive), "--console", *audio]
    process = Sensor(tmp, *args)
    port = process.console_path()
    target = Target(port, sensor, SITE, broker.port, process, state)
    if wait_levels:
        with target.console() as console:
            next(iter(console.stream("levels", count=1)))  # the meter runs
    return target


@pytest.fixture(scope="session")
def target(
    upy_interpreter: str,  # noqa: F811  (the fixture imported above: one sensor per interpreter)
    request: pytest.FixtureRequest,
    hil_broker: Mosquitto | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Target]:
    """The sensor under test, playing a steady 94 dB SPL 1 kHz tone (a calibrator) if virtual."""
    port = request.config.getoption("--port")
    if port is not None:
        with Console(port, timeout=20.0) as console:
            [status] = console.command("status")
        url = request.config.getoption("--broker-url")
        broker_port = int(url.rsplit(":", 1)[1]) if url else None
        yield Target(port, status["id"], status["site"], broker_port)
        return
    assert hil_broker is not None
    tmp = tmp_path_factory.mktemp("hil")
    found = start_virtual(tmp, hil_broker, "hil-01", "--synthetic", "cal94", "--speed", "4")
    try:
        yield found
    finally:
        assert found.virtual is not None
        found.virtual.kill()
