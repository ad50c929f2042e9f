"""`hushlight flash`: each step announced; failures say which step, why and what to try.

esptool and mpremote run for real, against ports that cannot work: a path
that does not exist, a pseudo-terminal nobody answers on (a board not in
download mode looks like that to esptool), and a port we may not open.
"""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tools.console_sensor import console_sensor
from tools import flash
from tools.broker import Mosquitto, free_port

MISSING = "/dev/ttyUSB-hushlight-missing"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "ESP32_GENERIC.bin"
    path.write_bytes(os.urandom(128 * 1024))
    return path


@pytest.fixture
def silent_port() -> Iterator[str]:
    """A pseudo-terminal with nobody on the other side."""
    master, slave = pty.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(slave)
        os.close(master)


def _flash(
    tmp_path: Path, image: Path, port: str, *extra: str, wrap: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *wrap,
            sys.executable,
            "-m",
            "tools.cli",
            "flash",
            "--port",
            port,
            "--micropython-bin",
            str(image),
            "--build-dir",
            str(tmp_path / "build"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_missing_image_is_a_usage_error(tmp_path: Path) -> None:
    proc = _flash(tmp_path, tmp_path / "nope.bin", MISSING)
    assert proc.returncode == 2
    assert "nope.bin" in proc.stderr and "micropython.org" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_port_that_does_not_exist(tmp_path: Path, image: Path) -> None:
    proc = _flash(tmp_path, image, MISSING)
    assert proc.returncode == 1, proc.stderr
    assert "[1/6] build the firmware" in proc.stdout
    assert "[2/6] erase the flash" in proc.stdout
    assert "step 2/6 (erase the flash" in proc.stderr
    assert f"the port {MISSING} does not exist" in proc.stderr
    assert "ls /dev/ttyUSB*" in proc.stderr
    # The build step really ran before.
    assert any((tmp_path / "build").rglob("*.mpy"))


def test_board_not_in_download_mode(tmp_path: Path, image: Path, silent_port: str) -> None:
    proc = _flash(tmp_path, image, silent_port, "--no-erase")
    assert proc.returncode == 1, proc.stderr
    assert "step 2/5 (write ESP32_GENERIC.bin at 0x1000) failed" in proc.stderr
    assert "did not answer the ROM bootloader" in proc.stderr
    assert "hold BOOT" in proc.stderr
    assert "pseudo-terminal" in proc.stderr


def test_no_permission_on_the_port(tmp_path: Path, image: Path, silent_port: str) -> None:
    os.chmod(silent_port, 0)
    wrap: tuple[str, ...] = ()
    if os.geteuid() == 0:
        # root ignores file modes; without these two capabilities it obeys them like a user.
        setpriv = shutil.which("setpriv")
        assert setpriv is not None, "setpriv (util-linux) is needed to drop root's file access"
        wrap = (setpriv, "--bounding-set=-dac_override,-dac_read_search")
    proc = _flash(tmp_path, image, silent_port, wrap=wrap)
    assert proc.returncode == 1, proc.stderr
    assert "step 2/6 (erase the flash" in proc.stderr
    assert f"no permission to open {silent_port}" in proc.stderr
    assert "dialout" in proc.stderr


def test_mpremote_steps_name_the_step(silent_port: str) -> None:
    step = flash.Step(4, 6, "copy the firmware to the board")
    with pytest.raises(flash.StepError) as err:
        flash.run_mpremote(step, MISSING, ["fs", "ls"])
    assert str(err.value).startswith("step 4/6 (copy the firmware to the board) failed")
    assert "does not exist" in str(err.value)
    # mpremote waits forever for a raw REPL on a line where nobody answers.
    with pytest.raises(flash.StepError) as err:
        flash.run_mpremote(step, silent_port, ["fs", "ls"], timeout=3.0)
    assert "did not answer mpremote within 3 s" in str(err.value)
    assert "provision --out" in str(err.value)


@pytest.mark.parametrize(
    ("output", "why"),
    [
        ("could not open port: [Errno 16] Device or resource busy", "in use by another program"),
        ("mpremote: could not enter raw repl", "did not give its raw REPL"),
        ("Some new failure\nwith detail", "Some new failure; with detail"),
    ],
)
def test_diagnose_other_failures(silent_port: str, output: str, why: str) -> None:
    reason, advice = flash.diagnose(silent_port, output)
    assert why in reason
    assert advice


def test_selftest_step_against_a_virtual_sensor(tmp_path: Path, broker: Mosquitto) -> None:
    """The last step of a flash, run against a virtual sensor's console: it passes
    on a healthy sensor and names the step and the failing check otherwise."""
    step = flash.Step(7, 7, "wait for the self-test to pass")
    with console_sensor(tmp_path, broker.url, "--synthetic", "street", "--speed", "4") as (_, port):
        flash.wait_selftest(step, port, timeout=20.0)
    nobody = f"mqtt://127.0.0.1:{free_port()}"
    with (
        console_sensor(tmp_path, nobody, "--synthetic", "street", "--speed", "4") as (_, port),
        pytest.raises(flash.StepError) as err,
    ):
        flash.wait_selftest(step, port, timeout=1.0)
    text = str(err.value)
    assert text.startswith("step 7/7 (wait for the self-test to pass) failed")
    assert "broker:" in text
    assert f"hushlight selftest --port {port}" in text
