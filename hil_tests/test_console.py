"""The technician console, as the tools use it, on the target sensor."""

from __future__ import annotations

import time

from hil_tests.conftest import Target
from tools.selftest import run_checks

STATUS_FIELDS = {
    "state",
    "fw",
    "uptime_s",
    "rssi",
    "free_mem",
    "dsp_load",
    "buffered",
    "dropped",
    "calibration_offset_db",
    "config_rev",
    "id",
    "site",
    "broker_connected",
    "time_synced",
    "rate",
}
COMMANDS = "status, levels, get, set, cal, selftest, heap, reboot"


def test_status_has_the_contract_fields(target: Target) -> None:
    with target.console() as console:
        [status] = console.command("status")
    assert status["ok"] is True
    assert set(status) >= STATUS_FIELDS, STATUS_FIELDS - set(status)
    assert status["id"] == target.sensor
    assert 0.0 <= status["dsp_load"] < 0.25  # DESIGN.md: a quarter of one core at most


def test_unknown_command_and_key_say_what_exists(target: Target) -> None:
    with target.console() as console:
        [reply] = console.command("dance")
        [key] = console.command("get colour")
    assert reply == {
        "cmd": "dance",
        "ok": False,
        "error": f"unknown command 'dance'; commands: {COMMANDS}",
    }
    assert key["ok"] is False
    assert "'colour'" in key["error"] and "interval_s" in key["error"]


def test_levels_stream_until_a_line(target: Target) -> None:
    with target.console() as console:
        records = list(console.stream("levels", count=3))
        # the console answers normally after the stream was stopped
        [status] = console.command("status")
    assert [r["cmd"] for r in records] == ["levels"] * 3
    for r in records:
        assert {"t0", "t1", "laeq", "lafmax", "lceq", "flags"} <= set(r)
        assert r["t1"] > r["t0"]
        assert r["lafmax"] >= r["laeq"]
    assert status["ok"]


def test_set_refuses_a_bad_value_and_keeps_the_old_one(target: Target) -> None:
    with target.console() as console:
        [before] = console.command("get interval_s")
        [bad] = console.command("set interval_s -1")
        [after] = console.command("get interval_s")
    assert bad["ok"] is False
    assert "-1" in bad["error"] and "interval_s" in bad["error"]
    assert after["value"] == before["value"]


def test_config_round_trip_survives_a_reboot(target: Target) -> None:
    with target.console() as console:
        [old] = console.command("get peak_threshold_db")
        new = 73.5 if old["value"] != 73.5 else 72.5
        [done] = console.command(f"set peak_threshold_db {new}")
        assert done == {"cmd": "set", "ok": True, "key": "peak_threshold_db", "value": new}
        [reboot] = console.command("reboot")
        assert reboot["ok"]
        hello = console.wait_hello(60)
        assert hello["id"] == target.sensor
        [kept] = console.command("get peak_threshold_db")
        console.command(f"set peak_threshold_db {old['value']}")
    assert kept["value"] == new


def test_selftest_passes(target: Target) -> None:
    deadline = time.monotonic() + 30
    while True:
        checks = run_checks(target.port)
        if all(c.ok for c in checks) or time.monotonic() > deadline:
            break
        time.sleep(1)  # just after a reboot the broker may still be connecting
    assert [c.name for c in checks] == ["mic", "clipping", "dsp_load", "broker", "time"]
    assert all(c.ok for c in checks), checks
