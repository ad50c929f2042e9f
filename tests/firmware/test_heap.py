"""The sensor firmware fits the heap of a plain ESP32 with room to spare.

`hushlight sensor` runs the compiled firmware at the sensor heap of the
interpreter (`tools.upy.DEVICE_HEAP`, what an ESP32-WROOM without PSRAM
leaves it, on `device`; `HOST_HEAP` on `host`), measuring the street scene as
fast as it goes and publishing to a real Mosquitto, console open.  After
warm-up (a minute summary and a status are out) its free heap after a
collection must stay at 20 KiB or more: the margin for a backlog read back
from flash, a remote config and TLS records.  The same holds for a sensor
running an update from its slot (ota/a, hushlight.ota), whose modules load
from longer paths than the factory version's.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.firmware.ota_kit import NEW, OLD, checked_build, make_keys
from tests.tools.virtual import Sensor, Sub
from tools import upy
from tools.broker import Mosquitto
from tools.console import Console
from tools.sensor import heap_bytes

MARGIN = 20 * 1024
WARM_UP_S = 90  # audio seconds: a minute summary and the first status are behind


def install_in_slot(tmp_path: Path, state: Path) -> list[str]:
    """Release NEW of this checkout, built for the interpreter under test, written into
    slot a of `state` as a confirmed update; the sensor's extra arguments."""
    keys = make_keys(tmp_path / "keys")
    bundle = checked_build(keys, NEW, tmp_path / "rel", upy.interpreter().name)
    for name, _size, _sha in bundle.files:
        target = state / "ota" / "a" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(bundle.file_path(name), target)
    ota = {"slot": "a", "version": NEW, "prev_slot": None, "prev_version": OLD}
    ota |= {"state": "confirmed", "boots": 0, "last": None}
    (state / "ota.json").write_text(json.dumps(ota))
    return ["--release-key", str(keys.public)]


@pytest.mark.parametrize("slot", [False, True], ids=["factory", "update-slot"])
def test_the_firmware_keeps_20_kib_free_at_the_sensor_heap(tmp_path: Path, slot: bool) -> None:
    state = tmp_path / "st"
    state.mkdir()
    extra = install_in_slot(tmp_path, state) if slot else []
    with Mosquitto() as broker:
        sub = Sub(broker.port, "hushlight/v1/heap/#")
        sub.ready()
        args = ["--id", "h1", "--site", "heap", "--broker", broker.url, "--synthetic", "street"]
        args += ["--speed", "20", "--state-dir", str(state), "--console"]
        args += ["--time-origin", "1700000000", *extra]
        sensor = Sensor(tmp_path, *args)
        try:
            port = sensor.console_path()
            time.sleep(1.0)  # past start-up: a firmware that dies there says why below
            assert sensor.proc.poll() is None, "the firmware stopped:\n" + sensor.output()
            with Console(port, timeout=10) as con:
                deadline = time.monotonic() + 60
                status: dict[str, object] = {}
                while time.monotonic() < deadline:
                    [status] = con.command("status")
                    if int(str(status["audio_s"])) >= WARM_UP_S:
                        break
                    time.sleep(0.5)
                assert int(str(status["audio_s"])) >= WARM_UP_S, sensor.output()
                [heap] = con.command("heap")
            summaries = sub.wait_for(lambda t, v: t.endswith("/summary"), 1, "a summary")
        finally:
            sensor.stop()
            sub.close()
    assert summaries and sub.of("levels"), "the sensor published nothing"
    # the version that ran: the slot's when there is one
    assert status["fw"] == (NEW if slot else OLD), status
    free = int(str(status["free_mem"]))
    assert free >= MARGIN, (
        f"{free} B free after {status['audio_s']} s of audio, under the {MARGIN} B margin; "
        f"where the heap goes: {heap}"
    )
    # the console's table says where the heap goes, and adds up to all of it
    parts = {k: int(v) for k, v in heap.items() if k not in ("cmd", "ok")}
    assert heap["ok"] is True
    for part in ("code", "audio", "meter", "store", "mqtt", "console"):
        assert parts[part] > 0, heap
    size = heap_bytes(upy.interpreter().heap)
    assert 0.9 * size < sum(parts.values()) <= size, heap
