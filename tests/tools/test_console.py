"""The technician console of a virtual sensor over its pseudo-terminal, driven
with tools/console.py (pyserial), as the technician tools drive a real one."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from tests.tools.virtual import SITE, Sensor
from tools.broker import Mosquitto
from tools.console import Console, is_final
from tools.errors import ToolError

STATUS_FIELDS = {
    "state", "fw", "uptime_s", "rssi", "free_mem", "dsp_load", "buffered", "dropped",
    "calibration_offset_db", "config_rev", "id", "site", "broker_connected", "time_synced", "rate",
}  # fmt: skip


@pytest.fixture(scope="module")
def cal_sensor(
    _session_broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Sensor, str, Path]]:
    """One sensor hearing a 94 dB calibrator, console on a pseudo-terminal."""
    tmp = tmp_path_factory.mktemp("console")
    state = tmp / "st"
    args = ["--id", "con", "--site", SITE, "--broker", _session_broker.url]
    args += ["--state-dir", str(state), "--synthetic", "cal94", "--speed", "4", "--console"]
    s = Sensor(tmp, *args)
    try:
        yield s, s.console_path(), state
    finally:
        s.kill()


@pytest.fixture
def con(cal_sensor: tuple[Sensor, str, Path]) -> Iterator[Console]:
    with Console(cal_sensor[1], timeout=10) as c:
        # wait until the first interval exists, so every command has data
        while c.command("status")[0]["uptime_s"] < 1:
            pass
        yield c


def test_status_has_the_contract_fields(con: Console) -> None:
    [reply] = con.command("status")
    assert reply["cmd"] == "status" and reply["ok"] is True
    assert set(reply) >= STATUS_FIELDS
    assert (reply["id"], reply["site"], reply["rate"]) == ("con", SITE, 48000)
    assert reply["broker_connected"] is True and reply["state"] == "online"
    assert 0 < reply["dsp_load"] < 1


def test_get_set_and_their_errors(con: Console) -> None:
    [got] = con.command("get peak_threshold_db")
    assert got == {"cmd": "get", "ok": True, "key": "peak_threshold_db", "value": 70.0}
    [bad] = con.command("get volume")
    assert bad["ok"] is False and "'volume'" in bad["error"] and "interval_s" in bad["error"]
    [ok] = con.command("set peak_threshold_db 72.5")
    assert ok == {"cmd": "set", "ok": True, "key": "peak_threshold_db", "value": 72.5}
    # the same rules as a remote config
    [bad] = con.command("set peak_threshold_db loud")
    assert bad["ok"] is False and "peak_threshold_db" in bad["error"]
    [bad] = con.command("set interval_s 0.3")
    assert bad["ok"] is False and "0.3" in bad["error"]
    [bad] = con.command("set broker mqtt://elsewhere:1883")
    assert bad["ok"] is False and "broker" in bad["error"]
    [still] = con.command("get peak_threshold_db")
    assert still["value"] == 72.5
    con.command("set peak_threshold_db 70")


def test_secrets_are_masked(cal_sensor: tuple[Sensor, str, Path], con: Console) -> None:
    [got] = con.command("get mqtt_password")
    assert got["ok"] is True and got["value"] in (None, "***")


def test_unknown_command_lists_the_commands(con: Console) -> None:
    [reply] = con.command("dance now")
    assert reply == {
        "cmd": "dance",
        "ok": False,
        "error": "unknown command 'dance'; commands: status, levels, get, set, cal, "
        "selftest, heap, reboot",
    }


def test_levels_stream_until_a_line_arrives(con: Console) -> None:
    records = list(con.stream("levels", count=3))
    assert len(records) == 3
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    for r in records:
        assert r["cmd"] == "levels" and r["ok"] is True
        assert r["t1"] - r["t0"] == 1000
        # a 1 kHz tone: A and C weighting are both 0 dB there (IEC 61672-1 table 3)
        assert abs(r["laeq"] - 94.0) < 0.1 and abs(r["lceq"] - 94.0) < 0.1
    # the stream is over: the next command gets its own reply
    [reply] = con.command("status")
    assert reply["cmd"] == "status"


def test_selftest_reports_each_check(con: Console) -> None:
    replies = con.command("selftest")
    checks = {r["check"]: r for r in replies if "check" in r}
    assert set(checks) == {"mic", "clipping", "dsp_load", "broker", "time"}
    assert all(r["ok"] is True and r["detail"] for r in checks.values())
    assert replies[-1] == {"cmd": "selftest", "ok": True, "done": True}


def test_calibration_stores_the_offset(cal_sensor: tuple[Sensor, str, Path], con: Console) -> None:
    # the scene is a 94 dB tone; a calibrator "certified" at 95.5 dB means the
    # sensor reads 1.5 dB low
    replies = con.command("cal 95.5 2", timeout=15)
    progress = [r["progress"] for r in replies if "progress" in r]
    assert progress == sorted(progress) and all(0 < p < 1 for p in progress)
    done = replies[-1]
    assert done["ok"] is True and done["done"] is True
    assert abs(done["measured_db"] - 94.0) < 0.05
    assert done["ref_db"] == 95.5 and done["previous_offset_db"] == 0.0
    assert math.isclose(done["offset_db"], round(95.5 - done["measured_db"], 2))
    [got] = con.command("get calibration_offset_db")
    assert got["value"] == done["offset_db"]
    saved = json.loads((cal_sensor[2] / "config.json").read_text())
    assert saved["calibration_offset_db"] == done["offset_db"]
    # and the levels now read the calibrator's level
    [rec] = list(con.stream("levels", count=2))[-1:]
    assert abs(rec["laeq"] - 95.5) < 0.1
    con.command("set calibration_offset_db 0")


@pytest.mark.parametrize(
    ("line", "needle"),
    [("cal", "usage"), ("cal loud", "usage"), ("cal 200", "200"), ("cal 94 0.1", "0.1")],
)
def test_calibration_arguments_are_checked(con: Console, line: str, needle: str) -> None:
    [reply] = con.command(line)
    assert reply["ok"] is False and needle in reply["error"]


def test_reboot_comes_back_with_its_settings(
    cal_sensor: tuple[Sensor, str, Path], con: Console
) -> None:
    con.command("set interval_s 2")
    assert con.command("reboot") == [{"cmd": "reboot", "ok": True}]
    hello = con.wait_hello(30)
    assert hello["id"] == "con" and hello["ok"] is True
    [got] = con.command("get interval_s")
    assert got["value"] == 2.0
    con.command("set interval_s 1")
    assert cal_sensor[0].proc.poll() is None


def test_client_skips_log_lines_and_reports_silence(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        with Console(os.ttyname(slave), timeout=0.5) as c:
            os.write(master, b"booting...\n{not json\n[1,2]\n")
            os.write(master, b'{"cmd":"status","ok":true,"state":"online"}\n')
            assert c.read_object() == {"cmd": "status", "ok": True, "state": "online"}
            with pytest.raises(ToolError, match="no reply to 'status'"):
                c.command("status")
    finally:
        os.close(master)
        os.close(slave)


def test_client_refuses_a_port_that_does_not_exist() -> None:
    with pytest.raises(ToolError, match="/dev/nonexistent-port"):
        Console("/dev/nonexistent-port")


def test_final_reply_rules() -> None:
    assert is_final("status", {"cmd": "status", "ok": True})
    assert not is_final("cal", {"cmd": "cal", "ok": True, "progress": 0.5})
    assert is_final("cal", {"cmd": "cal", "ok": False, "error": "x"})
    assert not is_final("selftest", {"cmd": "selftest", "check": "mic", "ok": False})
    assert is_final("selftest", {"cmd": "selftest", "ok": False, "done": True})
    assert serial.VERSION  # pyserial is what drives the line


def test_a_console_nobody_reads_never_stalls_the_sensor(
    _session_broker: Mosquitto, tmp_path: Path
) -> None:
    """`levels` streams into a terminal the tool walked away from: once the
    terminal's buffer is full the lines are dropped and the sensor measures
    and publishes on."""
    from tests.tools.test_sensor import sensor_topic
    from tests.tools.virtual import Sub

    sub = Sub(_session_broker.port, sensor_topic("deaf"))
    sub.ready()
    args = ["--id", "deaf", "--site", SITE, "--broker", _session_broker.url]
    args += ["--state-dir", str(tmp_path / "st"), "--synthetic", "quiet", "--speed", "0"]
    s = Sensor(tmp_path, *args, "--console")
    try:
        port = s.console_path()
        with Console(port, timeout=10) as c:
            c.wait_hello(30)
            c.send("levels")
            assert c.read_object() is not None
        # ~200 KiB of lines: well past what a terminal buffers
        sub.wait_for(lambda t, v: t.endswith("/levels") and v["seq"] >= 1500, 60, "records")
        with Console(port, timeout=10) as c:
            c.send("")  # ends the stream
            while (obj := c.read_object()) is not None and not obj.get("done"):
                pass
            [status] = c.command("status")
            assert status["ok"] is True and status["broker_connected"] is True
    finally:
        s.kill()
        sub.close()
