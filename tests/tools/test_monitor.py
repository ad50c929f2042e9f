"""`hushlight monitor`: live levels and the warnings a technician must see."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.tools.console_sensor import console_sensor
from tools import monitor
from tools.broker import Mosquitto, free_port

HEALTHY = {
    "state": "online",
    "dsp_load": 0.01,
    "broker_connected": True,
    "time_synced": True,
    "dropped": 0,
    "buffered": 0,
}


def _monitor(port: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "monitor", "--port", port, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_warnings_when_healthy() -> None:
    assert monitor.warnings(HEALTHY, {"flags": []}) == []


def test_each_warning() -> None:
    cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        ({"dsp_load": 0.4}, {}, "high DSP load: 40%"),
        (
            {"broker_connected": False, "buffered": 12},
            {},
            "broker down: records wait in the sensor (12",
        ),
        ({"time_synced": False}, {}, "unsynced time"),
        ({"dropped": 3}, {}, "3 records dropped"),
        ({}, {"flags": ["clipped"]}, "clipping"),
        ({}, {"flags": ["unsynced_time"]}, "unsynced time"),
    ]
    for change, record, expected in cases:
        found = monitor.warnings({**HEALTHY, **change}, {"flags": [], **record})
        assert len(found) == 1 and found[0].startswith(expected), (change, record, found)
    # the DSP budget is a quarter of a core: exactly at it is still fine
    assert monitor.warnings({**HEALTHY, "dsp_load": monitor.DSP_BUDGET}, None) == []


def test_live_levels_and_broker_down(tmp_path: Path) -> None:
    nobody = f"mqtt://127.0.0.1:{free_port()}"
    with console_sensor(tmp_path, nobody, "--synthetic", "street", "--speed", "4") as (_, port):
        proc = _monitor(port, "--duration", "1.5")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    records = [line for line in lines if "LAeq" in line]
    assert len(records) >= 2
    assert any(line.startswith("status ns-01@") for line in lines)
    assert "warning: broker down" in proc.stdout
    assert "high DSP load" not in proc.stdout


def test_healthy_sensor_prints_no_warning(tmp_path: Path, broker: Mosquitto) -> None:
    with console_sensor(tmp_path, broker.url, "--synthetic", "street", "--speed", "4") as (_, port):
        proc = _monitor(port, "--duration", "1.5")
    assert proc.returncode == 0, proc.stderr
    assert "LAeq" in proc.stdout
    assert "warning:" not in proc.stdout


def test_bad_duration_is_a_usage_error() -> None:
    proc = _monitor("/dev/null", "--duration", "0")
    assert proc.returncode == 2
    assert "--duration 0" in proc.stderr
