"""`hushlight selftest` against a virtual sensor: pass, fail with advice, bad port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.tools.console_sensor import console_sensor
from tools import selftest
from tools.broker import Mosquitto, free_port

CHECKS = ["mic", "clipping", "dsp_load", "broker", "time"]


def _selftest(port: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "selftest", "--port", port, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_all_checks_pass_on_a_healthy_sensor(tmp_path: Path, broker: Mosquitto) -> None:
    with console_sensor(tmp_path, broker.url, "--synthetic", "street", "--speed", "4") as (_, port):
        checks = selftest.run_checks(port)
        assert [c.name for c in checks] == CHECKS
        assert all(c.ok for c in checks), checks
        proc = _selftest(port, "--wait", "10")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASS") == len(CHECKS)
    assert "all checks passed" in proc.stdout


def test_broker_unreachable_fails_with_advice(tmp_path: Path) -> None:
    nobody = f"mqtt://127.0.0.1:{free_port()}"
    with console_sensor(tmp_path, nobody, "--synthetic", "street", "--speed", "4") as (_, port):
        proc = _selftest(port)
    assert proc.returncode == 1
    rows = {
        line.split("│")[1].strip(): line
        for line in proc.stdout.splitlines()
        if line.count("│") >= 3
    }
    assert "FAIL" in rows["broker"]
    assert "PASS" in rows["mic"]
    assert "try: check Wi-Fi" in proc.stdout
    assert "1 of 5 checks failed" in proc.stdout


def test_port_that_does_not_exist_is_a_usage_error() -> None:
    proc = _selftest("/dev/ttyUSB-hushlight-missing")
    assert proc.returncode == 2
    assert "/dev/ttyUSB-hushlight-missing does not exist" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_port_where_nobody_answers(tmp_path: Path) -> None:
    import os
    import pty

    master, slave = pty.openpty()
    try:
        proc = _selftest(os.ttyname(slave), "--timeout", "1")
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 1
    assert "no reply to 'selftest'" in proc.stderr
