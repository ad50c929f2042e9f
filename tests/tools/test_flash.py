"""`hushlight flash`: each step announced; failures say which step, why and what to try.

esptool and mpremote run for real, against ports that cannot work: a path
that does not exist, a pseudo-terminal nobody answers on (a board not in
download mode looks like that to esptool), and a port we may not open.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.firmware.conftest import make_ca
from tests.tools.console_sensor import console_sensor
from tests.tools.upy_board import UnixBoard
from tools import flash
from tools.broker import Mosquitto, free_port

MISSING = "/dev/ttyUSB-hushlight-missing"


def esp_image(path: Path, chip_id: int = 0) -> Path:
    """An image with the ESP-IDF header of `chip_id` (esp_app_format.h) and random contents."""
    header = struct.pack("<BBBBI", 0xE9, 3, 2, 0x20, 0x40080000) + bytes(4)
    path.write_bytes(header + struct.pack("<H", chip_id) + os.urandom(128 * 1024))
    return path


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return esp_image(tmp_path / "ESP32_GENERIC.bin")


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


# ---------------------------------------------------------------- inputs first


def _provision_out(folder: Path, broker: str = "mqtts://mqtt.leuven.example:8883") -> Path:
    """`hushlight provision --out` with a CA, as the README's technician runs it."""
    folder.mkdir(parents=True, exist_ok=True)
    city_ca = make_ca(folder / "pki", "city CA").ca
    out = folder / "ns-02.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "provision", "--out", str(out), "--id", "ns-02",
         "--site", "leuven", "--wifi-ssid", "city-iot", "--wifi-password", "w",
         "--broker", broker, "--ca", str(city_ca)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


def _edit(config: Path, **changes: object) -> None:
    values = json.loads(config.read_text())
    values.update(changes)
    config.write_text(json.dumps(values))


# what each case breaks, and what the refusal must say
BAD_INPUTS = {
    "not json": "is not JSON (Expecting value at line 1, column 1)",
    "unknown key": "unknown key 'wifi_pasword'",
    "firmware rule": "keepalive_s is 3",
    "no wifi": "wifi_ssid is None",
    "CA missing": "names the CA 'ca.pem' (ca_file), but",
    "CA not a certificate": "is not a PEM or DER certificate",
    "image not ESP": "is not an ESP32 firmware image (its first byte is 0x7f",
    "image of an S3": "chip id 9",
}


def _spoil(case: str, config: Path, image: Path) -> None:
    if case == "not json":
        config.write_text("this is not json\n")
    elif case == "unknown key":
        _edit(config, wifi_pasword="typo")
    elif case == "firmware rule":
        _edit(config, keepalive_s=3)
    elif case == "no wifi":
        _edit(config, wifi_ssid=None)
    elif case == "CA missing":
        (config.parent / "ca.pem").unlink()
    elif case == "CA not a certificate":
        (config.parent / "ca.pem").write_text("junk")
    elif case == "image not ESP":
        image.write_bytes(b"\x7fELF" + bytes(1 << 17))
    else:
        esp_image(image, chip_id=9)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_every_input_is_checked_before_the_board_changes(
    tmp_path: Path, image: Path, case: str
) -> None:
    config = _provision_out(tmp_path / "site")
    _spoil(case, config, image)
    proc = _flash(tmp_path, image, MISSING, "--config", str(config))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert BAD_INPUTS[case] in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    # no step ran: no erase, and not even the build
    assert proc.stdout == ""
    assert not (tmp_path / "build").exists()


def test_the_config_and_every_file_it_names_reach_the_board(tmp_path: Path) -> None:
    config = _provision_out(tmp_path / "site")
    _, files = flash.check_config(config)
    assert [f.name for f in files] == ["config.json", "ca.pem"]
    with UnixBoard(tmp_path / "board") as board:
        flash.copy_to_board(flash.Step(5, 7, "copy config.json and ca.pem"), board.port, files)
    on_board = tmp_path / "board"
    assert (on_board / "config.json").read_bytes() == config.read_bytes()
    assert (on_board / "ca.pem").read_bytes() == (tmp_path / "site" / "pki" / "ca.pem").read_bytes()
    # and the firmware there starts with what it got
    assert flash._firmware_verdict(on_board / "config.json") is None


def test_selftest_step_proves_the_tls_connection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tls = make_ca(tmp_path / "tls", "broker CA")
    other = make_ca(tmp_path / "other", "somebody else's CA")
    step = flash.Step(7, 7, "wait for the self-test to pass")
    heap = ("--heap", "256K")  # the firmware's own heap size is not what this test is about
    with Mosquitto(tls=(tls.ca, tls.cert, tls.key)) as b:
        url = b.tls_url
        audio = ("--synthetic", "street", "--speed", "4", *heap)
        with console_sensor(tmp_path, url, "--ca", str(tls.ca), *audio) as (_, port):
            flash.wait_selftest(step, port, timeout=30.0, broker=url, ca="ca.pem")
            assert f"TLS: connected to {url}, the broker's certificate verified" in (
                capsys.readouterr().out
            )
            # connected, but not to the broker of the config just copied
            with pytest.raises(flash.StepError) as err:
                flash.wait_selftest(step, port, timeout=5.0, broker="mqtts://other.example:8883")
            assert "does not report a connection to its config's broker" in str(err.value)
        with (
            console_sensor(tmp_path, url, "--ca", str(other.ca), *audio, sensor="ns-02") as (
                _,
                port,
            ),
            pytest.raises(flash.StepError) as err,
        ):
            flash.wait_selftest(step, port, timeout=5.0, broker=url, ca="ca.pem")
        text = str(err.value)
        assert "broker: not connected" in text
        assert "must chain to ca.pem" in text


def test_the_release_key_is_checked_and_reaches_the_board(tmp_path: Path, image: Path) -> None:
    from tools import release

    config = _provision_out(tmp_path / "site")
    # a private key where the public one belongs is refused before any step
    private, public = release.generate_key(tmp_path / "keys", 2048)
    proc = _flash(tmp_path, image, MISSING, "--config", str(config), "--release-key", str(private))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{private} is not a public release key" in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "build").exists()
    # the good one goes to the board as release.pub, beside the config and its CA
    _, files = flash.board_files(config, public)
    assert [f.name for f in files] == ["config.json", "ca.pem", "release.pub"]
    assert [f.name for f in flash.board_files(None, public)[1]] == ["release.pub"]
    with UnixBoard(tmp_path / "board") as board:
        flash.copy_to_board(flash.Step(5, 7, "copy the files"), board.port, files)
    assert (tmp_path / "board" / "release.pub").read_text() == public.read_text()
