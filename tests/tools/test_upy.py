"""The two MicroPython interpreters (tools/upy.py): the ESP32 stand-in really
has the ESP32's word size and float precision, the tools run it by default,
and `hushlight sensor` runs its firmware in it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.tools.virtual import Sensor
from tools import upy, upy_build
from tools.broker import Mosquitto
from tools.errors import ToolError, UsageError

WORD_AND_FLOAT = """
import sys, micropython
@micropython.viper
def double(x: int) -> int:
    return x * 2
print(sys.maxsize, repr(1 / 3), double(0x7FFFFFFF), repr(1781298000.0 + 0.25))
"""

# A value past 2**30 is a small int on x86-64 and a heap-allocated long int on
# the ESP32: under heap_lock() only the latter raises MemoryError.
BIG_INT_UNDER_LOCK = """
import micropython
def grow(base):
    micropython.heap_lock()
    try:
        base * 2 + 1
        r = 0
    except MemoryError:
        r = 1
    micropython.heap_unlock()
    return r
print(("small", "allocates")[grow(1 << 29)])
"""


def test_device_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(upy.ENV_VAR, raising=False)
    assert upy.interpreter().name == "device"
    assert upy.micropython_binary() == str(upy_build.INTERPRETER)


def test_device_has_32_bit_words_and_single_precision_floats() -> None:
    maxsize, third, doubled, epoch = upy.run_code(WORD_AND_FLOAT, name="device").split()
    assert int(maxsize) == 2**31 - 1
    assert third == "0.33333334"  # float32 rounds 1/3 up in its 24th bit
    assert int(doubled) == -2  # the viper int wrapped at 32 bits
    assert epoch != "1781298000.25"  # float32 cannot hold an epoch to the second


def test_host_has_64_bit_words_and_double_precision_floats() -> None:
    maxsize, third, doubled, epoch = upy.run_code(WORD_AND_FLOAT, name="host").split()
    assert int(maxsize) == 2**63 - 1
    assert third == "0.3333333333333333"
    assert int(doubled) == 2 * 0x7FFFFFFF
    assert epoch == "1781298000.25"


@pytest.mark.parametrize(("name", "expected"), [("device", "allocates"), ("host", "small")])
def test_ints_past_2_30_allocate_on_the_device_only(name: str, expected: str) -> None:
    assert upy.run_code(BIG_INT_UNDER_LOCK, name=name).strip() == expected


def test_a_bad_interpreter_name_is_refused_with_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(UsageError, match="'esp8266' is unknown; use 'device'"):
        upy.interpreter("esp8266")
    monkeypatch.setenv(upy.ENV_VAR, "pico")
    with pytest.raises(ToolError, match="HUSHLIGHT_INTERPRETER='pico'"):
        upy.interpreter()


def test_a_missing_build_names_the_command_that_makes_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(upy_build, "INTERPRETER", tmp_path / "micropython")
    with pytest.raises(ToolError, match="make micropython"):
        upy.interpreter("device")


def _elf_class(path: Path) -> int:
    with path.open("rb") as f:
        header = f.read(5)
    assert header[:4] == b"\x7fELF", path
    return header[4]  # EI_CLASS: 1 = 32-bit, 2 = 64-bit


def _firmware_exe(sensor: Sensor, timeout: float = 30.0) -> Path:
    """The executable running the wrapper's MicroPython child (mpy-cross runs
    first).  The host port from PyPI is a C extension that CPython runs from a
    `micropython` script, so its executable is that Python."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = sensor.firmware_pid()
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            exe = Path(os.readlink(f"/proc/{pid}/exe"))
        except (FileNotFoundError, ProcessLookupError):
            continue  # that child (mpy-cross, say) just ended
        if any(Path(a.decode()).name == "micropython" for a in argv[:2]) and "-X" in (
            a.decode() for a in argv
        ):
            return exe
        time.sleep(0.05)
    raise AssertionError(f"no MicroPython process under the sensor: {sensor.output()}")


@pytest.mark.parametrize(("flag", "elf_class"), [((), 1), (("--interpreter", "host"), 2)])
def test_the_sensor_runs_its_firmware_in_the_chosen_interpreter(
    broker: Mosquitto, tmp_path: Path, flag: tuple[str, ...], elf_class: int
) -> None:
    env_before = os.environ.pop(upy.ENV_VAR, None)
    try:
        sensor = Sensor(
            tmp_path,
            *("--id", "interp", "--site", "test", "--broker", broker.url),
            *("--synthetic", "quiet", "--rate", "16000", "--state-dir", str(tmp_path / "s")),
            *flag,
        )
    finally:
        if env_before is not None:
            os.environ[upy.ENV_VAR] = env_before
    try:
        exe = _firmware_exe(sensor)
        assert _elf_class(exe) == elf_class
        if not flag:
            assert exe == upy_build.INTERPRETER.resolve()
        deadline = time.monotonic() + 20
        while "heap" not in sensor.err.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        heap = upy.DEVICE_HEAP if not flag else upy.HOST_HEAP
        assert f"heap {heap}" in sensor.err.read_text()
    finally:
        sensor.kill()


def test_a_bad_heap_size_is_refused(broker: Mosquitto, tmp_path: Path) -> None:
    from tools.sensor import heap_bytes

    assert heap_bytes("110K") == 110 * 1024
    assert heap_bytes("2m") == 2 * 1024 * 1024
    for bad in ("110KB", "-5K", "8K", "lots"):
        with pytest.raises(UsageError, match="--heap"):
            heap_bytes(bad)
