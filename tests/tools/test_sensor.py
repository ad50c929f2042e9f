"""`hushlight sensor`: the firmware in the MicroPython unix port against a real
Mosquitto, as a deployed sensor behaves."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dsp import signals
from dsp.wavfile import write_wav
from protocol import payloads, topics
from tests.firmware.conftest import TlsFiles, make_ca
from tests.tools.virtual import SITE, Sensor, Sub, publish
from tools.broker import Mosquitto
from tools.cli import main
from tools.upy import REPO_ROOT

ORIGIN = 1_700_000_000  # a fixed virtual time origin, UTC epoch s


def sensor_args(broker: Mosquitto, sensor: str, state: Path, *more: str) -> list[str]:
    return [
        "--id",
        sensor,
        "--site",
        SITE,
        "--broker",
        broker.url,
        "--state-dir",
        str(state),
        *more,
    ]


def sensor_topic(sensor: str) -> str:
    return f"hushlight/v1/{SITE}/sensors/{sensor}/#"


@pytest.fixture
def sensors() -> Iterator[list[Sensor]]:
    started: list[Sensor] = []
    yield started
    for s in started:
        s.kill()


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--id", "Bad_Id", "--site", "s", "--broker", "mqtt://h:1", "--synthetic", "quiet"],
            "Bad_Id",
        ),
        (["--id", "a", "--site", "s", "--broker", "http://h", "--synthetic", "quiet"], "http://h"),
        (
            ["--id", "a", "--site", "s", "--broker", "mqtt://h:70000", "--synthetic", "quiet"],
            "port",
        ),
        (["--id", "a", "--site", "s", "--broker", "mqtt://h:1", "--synthetic", "rain"], "'rain'"),
        (
            [
                "--id",
                "a",
                "--site",
                "s",
                "--broker",
                "mqtt://h:1",
                "--stdin-pcm",
                "--rate",
                "22050",
            ],
            "22050",
        ),
        (["--id", "a", "--site", "s", "--broker", "mqtts://h:1", "--synthetic", "quiet"], "--ca"),
        (
            ["--id", "a", "--site", "s", "--broker", "mqtt://h:1", "--wav", "/nonexistent.wav"],
            "nonexistent",
        ),
        (
            [
                "--id",
                "a",
                "--site",
                "s",
                "--broker",
                "mqtt://h:1",
                "--synthetic",
                "quiet",
                "--interval",
                "0.3",
            ],
            "0.3",
        ),
        (
            [
                "--id",
                "a",
                "--site",
                "s",
                "--broker",
                "mqtt://h:1",
                "--synthetic",
                "quiet",
                "--speed",
                "-1",
            ],
            "-1",
        ),
        (
            [
                "--id",
                "a",
                "--site",
                "s",
                "--broker",
                "mqtt://h:1",
                "--synthetic",
                "quiet",
                "--username",
                "u",
            ],
            "--password",
        ),
    ],
)
def test_bad_arguments_get_one_line_and_status_2(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sensor", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("hushlight sensor: error: ")
    assert needle in err


# ---------------------------------------------------------------- levels


def street_wav(
    path: Path, seconds: float = 6.0, rate: int = 48000, encoding: str = "pcm24"
) -> Path:
    """Pink noise around 50 dB(A) with a loud 1 kHz burst."""
    x = signals.pink_noise(rate, seconds, -70.0, seed=3)
    burst = signals.sine(rate, 1000.0, 1.5, -40.0)
    start = int(2.2 * rate)
    x[start : start + burst.size] += burst
    write_wav(path, rate, x, encoding)
    return path


@pytest.mark.parametrize("encoding", ["pcm24", "float32"])
def test_levels_match_hushlight_replay_record_for_record(
    broker: Mosquitto, tmp_path: Path, sensors: list[Sensor], encoding: str
) -> None:
    wav = street_wav(tmp_path / "street.wav", encoding=encoding)
    sensor = f"replay-{encoding}"
    sub = Sub(broker.port, sensor_topic(sensor))
    sub.ready()
    try:
        args = ["--wav", str(wav), "--time-origin", str(ORIGIN)]
        s = Sensor(tmp_path, *sensor_args(broker, sensor, tmp_path / "st", *args))
        sensors.append(s)
        assert s.proc.wait(60) == 0, s.output()
        sub.wait_for(
            lambda t, v: t.endswith("/status") and v == {"state": "offline"}, 10, "offline"
        )
        got = sorted(sub.of("levels"), key=lambda r: r["seq"])
    finally:
        sub.close()
    replay = subprocess.run(
        [sys.executable, "-m", "tools.cli", "replay", str(wav)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    expected = [json.loads(line) for line in replay.stdout.splitlines() if line.startswith("{")]
    # a sensor only reports whole intervals; replay may add the last partial one
    whole = [r for r in expected if r["t1"] - r["t0"] == 1.0]
    assert len(whole) == 6
    assert [r["seq"] for r in got] == list(range(len(whole)))
    for rec, ref in zip(got, whole, strict=True):
        payloads.decode_levels(json.dumps(rec))
        assert rec["t0"] == ORIGIN * 1000 + round(ref["t0"] * 1000)
        assert rec["t1"] == ORIGIN * 1000 + round(ref["t1"] * 1000)
        assert (rec["laeq"], rec["lafmax"], rec["lceq"]) == (
            ref["laeq"],
            ref["lafmax"],
            ref["lceq"],
        )


# ---------------------------------------------------------------- delivery


def is_status(state: str) -> Callable[[str, Any], bool]:
    return lambda t, v: t.endswith("/status") and isinstance(v, dict) and v.get("state") == state


def levels_seqs(sub: Sub) -> set[int]:
    return {r["seq"] for r in sub.of("levels") if isinstance(r, dict)}


def test_broker_outage_of_60_s_loses_no_record(
    fresh_broker: Mosquitto, tmp_path: Path, sensors: list[Sensor]
) -> None:
    """Broker stopped for 60 s mid-stream and restarted: a persistent-session
    QoS 1 subscriber sees every seq (the backlog spills to flash meanwhile)."""
    b = fresh_broker
    (tmp_path / "st").mkdir()
    # reconnect attempts at most 2 s apart, so the test need not wait out a long back-off
    (tmp_path / "st" / "config.json").write_text('{"backoff_max_s": 2}')
    sub = Sub(b.port, sensor_topic("outage"), client_id="outage-collector")
    sub.ready()
    # 4 records a second: a minute of outage is ~240 records, more than RAM holds
    s = Sensor(
        tmp_path,
        *sensor_args(
            b,
            "outage",
            tmp_path / "st",
            "--synthetic",
            "street",
            "--speed",
            "4",
            "--keepalive",
            "5",
        ),
    )
    sensors.append(s)
    sub.wait_for(lambda t, v: t.endswith("/levels") and v["seq"] >= 8, 30, "first records")
    b.stop()
    time.sleep(60)
    spilled = list((tmp_path / "st" / "spill").iterdir())
    b.start()
    # the subscriber reconnects to its session by itself; wait for records made after the restart
    _, status = sub.wait_for(
        lambda t, v: t.endswith("/status") and v.get("state") == "online" and v["uptime_s"] > 60,
        30,
        "status after the restart",
    )
    target = max(levels_seqs(sub)) + 12
    sub.wait_for(lambda t, v: t.endswith("/levels") and v["seq"] >= target, 60, "catch-up")
    seqs = levels_seqs(sub)
    assert seqs >= set(range(target + 1)), sorted(set(range(target + 1)) - seqs)[:20]
    assert status["dropped"] == 0
    assert spilled, "a minute of records should have spilled to flash"
    # the minute summaries of those five minutes of audio arrive too, every one
    summaries = {r["seq"] for r in sub.of("summary")}
    assert summaries and summaries == set(range(max(summaries) + 1))
    for r in sub.of("summary"):
        assert r["l10"] >= r["l50"] >= r["l90"] and r["peaks"] >= 1  # a burst every 20 s
    assert s.stop() == 0
    sub.close()


def test_killed_sensor_leaves_retained_offline_status(
    broker: Mosquitto, tmp_path: Path, sensors: list[Sensor]
) -> None:
    keepalive = 5
    sub = Sub(broker.port, sensor_topic("killed"))
    sub.ready()
    s = Sensor(
        tmp_path,
        *sensor_args(
            broker, "killed", tmp_path / "st", "--synthetic", "quiet", "--keepalive", str(keepalive)
        ),
    )
    sensors.append(s)
    sub.wait_for(is_status("online"), 30, "online status")
    # in real time without a time origin the records carry the host's clock
    _, rec = sub.wait_for(lambda t, v: t.endswith("/levels"), 10, "a record")
    now_ms = time.time() * 1000
    assert now_ms - 5000 < rec["t1"] <= now_ms and rec["t1"] - rec["t0"] == 1000
    assert rec["flags"] == []
    os.kill(s.firmware_pid(), signal.SIGKILL)
    # the broker publishes the will within 1.5 keepalives of the last packet
    sub.wait_for(is_status("offline"), 1.5 * keepalive + 2, "offline status (last will)")
    s.kill()
    sub.close()
    # and it is retained: a newcomer sees it
    late = Sub(broker.port, sensor_topic("killed").replace("#", "status"))
    try:
        late.wait_for(is_status("offline"), 10, "retained offline status")
    finally:
        late.close()


def test_frozen_sensor_is_declared_offline_within_the_keepalive_bound(
    broker: Mosquitto, tmp_path: Path, sensors: list[Sensor]
) -> None:
    """A sensor that stops talking without closing its connection (power cut,
    radio gone) is found out by the keepalive alone."""
    keepalive = 5
    sub = Sub(broker.port, sensor_topic("frozen"))
    sub.ready()
    s = Sensor(
        tmp_path,
        *sensor_args(
            broker, "frozen", tmp_path / "st", "--synthetic", "quiet", "--keepalive", str(keepalive)
        ),
    )
    sensors.append(s)
    sub.wait_for(is_status("online"), 30, "online status")
    pid = s.firmware_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        # MQTT 3.1.1 section 3.1.2.10: the broker gives up after 1.5 keepalives of
        # silence; Mosquitto 2.0 notices it up to ~3 s later (measured here:
        # 10.4-10.7 s for a 5 s keepalive), and this machine is shared
        sub.wait_for(is_status("offline"), 2 * keepalive + 6, "offline status (last will)")
    finally:
        os.kill(pid, signal.SIGCONT)
    s.kill()
    sub.close()


# ---------------------------------------------------------------- config


def test_remote_config_applied_echoed_and_bad_config_rejected(
    broker: Mosquitto, tmp_path: Path, sensors: list[Sensor]
) -> None:
    sensor = "conf"
    config_topic = topics.config(SITE, sensor)
    sub = Sub(broker.port, sensor_topic(sensor))
    sub.ready()
    s = Sensor(
        tmp_path,
        *sensor_args(
            broker,
            sensor,
            tmp_path / "st",
            "--synthetic",
            "quiet",
            "--speed",
            "8",
            "--time-origin",
            str(ORIGIN),
        ),
    )
    sensors.append(s)
    sub.wait_for(is_status("online"), 30, "online status")
    publish(
        broker.port, config_topic, '{"rev":5,"interval_s":2,"peak_threshold_db":65}', retain=True
    )
    sub.wait_for(
        lambda t, v: t.endswith("/status") and v.get("config_rev") == 5, 20, "config_rev 5"
    )
    _, rec = sub.wait_for(
        lambda t, v: t.endswith("/levels") and v["t1"] - v["t0"] == 2000, 20, "a 2 s record"
    )
    # rejected whole: the valid interval in it is not applied either
    publish(
        broker.port,
        config_topic,
        '{"rev":6,"interval_s":4,"peak_threshold_db":"loud"}',
        retain=True,
    )
    _, bad = sub.wait_for(
        lambda t, v: t.endswith("/status") and v.get("config_error"), 20, "config_error"
    )
    assert bad["config_rev"] == 5
    assert "peak_threshold_db" in bad["config_error"]
    publish(broker.port, config_topic, '{"rev":7,"interval_s":0.3}', retain=True)
    _, bad = sub.wait_for(
        lambda t, v: t.endswith("/status") and "0.3" in (v.get("config_error") or ""),
        20,
        "config_error for 0.3 s",
    )
    assert bad["config_rev"] == 5
    later = rec["seq"] + 3
    _, rec = sub.wait_for(
        lambda t, v: t.endswith("/levels") and v["seq"] >= later, 20, "later records"
    )
    assert rec["t1"] - rec["t0"] == 2000
    # persisted: after a restart the sensor still runs rev 5
    assert s.stop() == 0
    saved = json.loads((tmp_path / "st" / "config.json").read_text())
    assert (saved["config_rev"], saved["interval_s"], saved["peak_threshold_db"]) == (5, 2.0, 65.0)
    publish(broker.port, config_topic, "", retain=True)  # clear the retained config
    sub.close()


# ---------------------------------------------------------------- TLS


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A folder Mosquitto can read after it drops root to its own user
    (pytest's tmp_path lives under a private folder)."""
    folder = Path(tempfile.mkdtemp(prefix="hushlight-tls-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def readable_ca(folder: Path, cn: str) -> TlsFiles:
    files = make_ca(folder, cn)
    folder.chmod(0o755)
    for f in files:
        f.chmod(0o644)
    return files


def test_tls_with_a_pinned_test_ca(tmp_path: Path, public_dir: Path, sensors: list[Sensor]) -> None:
    tls = readable_ca(public_dir / "tls", "sensor test CA")
    with Mosquitto(tls=(tls.ca, tls.cert, tls.key)) as b:
        sub = Sub(b.port, sensor_topic("tls"))
        sub.ready()
        s = Sensor(
            tmp_path,
            "--id",
            "tls",
            "--site",
            SITE,
            "--broker",
            b.tls_url,
            "--ca",
            str(tls.ca),
            "--state-dir",
            str(tmp_path / "st"),
            "--synthetic",
            "quiet",
            "--speed",
            "8",
        )
        sensors.append(s)
        sub.wait_for(is_status("online"), 30, "online status over TLS")
        sub.wait_for(lambda t, v: t.endswith("/levels"), 20, "levels over TLS")
        assert s.stop() == 0
        sub.close()


def test_tls_refuses_a_broker_signed_by_another_ca(
    tmp_path: Path, public_dir: Path, sensors: list[Sensor]
) -> None:
    tls = readable_ca(public_dir / "tls", "the broker's CA")
    other = readable_ca(public_dir / "other", "somebody else's CA")
    with Mosquitto(tls=(tls.ca, tls.cert, tls.key)) as b:
        s = Sensor(
            tmp_path,
            "--id",
            "tls2",
            "--site",
            SITE,
            "--broker",
            b.tls_url,
            "--ca",
            str(other.ca),
            "--state-dir",
            str(tmp_path / "st"),
            "--synthetic",
            "quiet",
            "--speed",
            "8",
        )
        sensors.append(s)
        sub = Sub(b.port, sensor_topic("tls2"))
        sub.ready()
        time.sleep(4)
        assert sub.of("status") == [] and sub.of("levels") == []
        assert s.stop() == 0
        sub.close()


# ---------------------------------------------------------------- reboot


def test_reboot_with_a_spilled_backlog_loses_nothing(
    fresh_broker: Mosquitto, tmp_path: Path, sensors: list[Sensor]
) -> None:
    b = fresh_broker
    state = tmp_path / "st"
    sub = Sub(b.port, sensor_topic("backlog"), client_id="backlog-collector")
    sub.ready()
    b.stop()
    # no broker: 15 s of audio at full speed pile up and spill to flash
    wav = street_wav(tmp_path / "a.wav", seconds=120.0)
    s = Sensor(tmp_path, *sensor_args(b, "backlog", state, "--wav", str(wav)))
    sensors.append(s)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and s.proc.poll() is None:
        seqs_file = state / "seq.json"
        if (state / "spill").exists() and len(list((state / "spill").iterdir())) >= 2:
            break
        time.sleep(0.2)
    assert s.stop() == 0, s.output()
    assert seqs_file.exists()
    made = json.loads(seqs_file.read_text())["levels"]
    assert made > 0
    assert list((state / "spill").iterdir())
    b.start()
    # the same sensor boots again, now with a broker (the WAV plays again from its start)
    s2 = Sensor(tmp_path, *sensor_args(b, "backlog", state, "--synthetic", "quiet", "--speed", "8"))
    sensors.append(s2)
    sub.wait_for(lambda t, v: t.endswith("/levels") and v["seq"] >= made + 3, 60, "backlog and new")
    seqs = levels_seqs(sub)
    assert seqs >= set(range(made + 4)), sorted(set(range(made + 4)) - seqs)[:20]
    assert s2.stop() == 0
    sub.close()


def test_a_full_buffer_drops_the_oldest_records_and_says_so(
    fresh_broker: Mosquitto, tmp_path: Path, sensors: list[Sensor]
) -> None:
    b = fresh_broker
    state = tmp_path / "st"
    state.mkdir()
    # a 100-record buffer (config.json keys the command line does not set stay)
    (state / "config.json").write_text('{"buffer_records": 100, "backoff_max_s": 2}')
    sub = Sub(b.port, sensor_topic("full"), client_id="full-collector")
    sub.ready()
    b.stop()
    s = Sensor(tmp_path, *sensor_args(b, "full", state, "--synthetic", "quiet", "--speed", "40"))
    sensors.append(s)
    time.sleep(8)  # a few hundred records made, ~100 kept
    b.start()
    _, status = sub.wait_for(
        lambda t, v: t.endswith("/status") and v.get("state") == "online", 30, "online status"
    )
    dropped = status["dropped"]
    assert dropped > 0
    target = dropped + 150
    sub.wait_for(lambda t, v: t.endswith("/levels") and v["seq"] >= target, 30, "the backlog")
    got = levels_seqs(sub)
    assert s.stop() == 0
    sub.close()
    # the oldest went: the missing records are all at the start (more may
    # have gone while the first sends waited for their acknowledgements)
    first = min(got)
    assert first >= dropped
    assert got >= set(range(first, target + 1))


def test_stdin_pcm_is_measured_and_the_sensor_stops_at_its_end(
    broker: Mosquitto, tmp_path: Path, sensors: list[Sensor]
) -> None:
    # 3 s of a 1 kHz tone at 94 dB SPL as s16le: -26 dBFS on the INMP441 scale
    x = signals.sine(48000, 1000.0, 3.0, -26.0)
    pcm = tmp_path / "tone.s16"
    pcm.write_bytes((x * 32767).round().astype("<i2").tobytes())
    sub = Sub(broker.port, sensor_topic("piped"))
    sub.ready()
    with pcm.open("rb") as stdin:
        s = Sensor(tmp_path, *sensor_args(broker, "piped", tmp_path / "st", "--stdin-pcm",
                                          "--time-origin", str(ORIGIN)), stdin=stdin)  # fmt: skip
        sensors.append(s)
        assert s.proc.wait(60) == 0, s.output()
    sub.wait_for(is_status("offline"), 10, "offline status at the end")
    records = sorted(sub.of("levels"), key=lambda r: r["seq"])
    sub.close()
    assert [r["t0"] for r in records] == [ORIGIN * 1000 + 1000 * k for k in range(3)]
    for r in records:
        # A and C weighting are 0 dB at 1 kHz (IEC 61672-1 table 3)
        assert abs(r["laeq"] - 94.0) < 0.1 and abs(r["lceq"] - 94.0) < 0.1


# ---------------------------------------------------------------- secrets


def test_a_password_on_the_command_line_is_refused_with_the_ways_that_work() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "sensor", "--id", "pw", "--site", SITE,
         "--broker", "mqtt://127.0.0.1:1", "--synthetic", "quiet",
         "--username", "pw", "--password", "visible-to-ps"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "--password-file FILE" in err and "HUSHLIGHT_MQTT_PASSWORD" in err
    assert "visible-to-ps" not in err


def wait_for_line(s: Sensor, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in s.output().splitlines():
            if needle in line:
                return line
        if s.proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no {needle!r} in the sensor's output:\n{s.output()}")


@pytest.mark.parametrize("way", ["file", "environment"])
def test_the_password_comes_from_a_file_or_the_environment(
    tmp_path: Path, sensors: list[Sensor], way: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools.provision import hash_password

    passwd = tmp_path / "passwd"
    passwd.write_text(f"ns-pw:{hash_password('lamp-post-secret')}\n")
    secret = tmp_path / "secret"
    secret.write_text("lamp-post-secret\n")
    secret.chmod(0o600)
    how = ["--password-file", str(secret)] if way == "file" else []
    if way == "environment":
        monkeypatch.setenv("HUSHLIGHT_MQTT_PASSWORD", "lamp-post-secret")
    # no anonymous access: the sensor is in only if it sent the password
    with Mosquitto(password_file=passwd) as b:
        args = sensor_args(b, "ns-pw", tmp_path / "st", "--synthetic", "quiet", "--heap", "256K")
        s = Sensor(tmp_path, *args, "--username", "ns-pw", *how)
        sensors.append(s)
        wait_for_line(s, f"connected to {b.url}", 30)
        assert s.stop() == 0
    saved = json.loads((tmp_path / "st" / "config.json").read_text())
    assert saved["mqtt_password"] == "lamp-post-secret"


# ---------------------------------------------------------------- no broker


@pytest.mark.parametrize(
    ("where", "reason"),
    [("refused", "connection refused"), ("unknown", "cannot resolve 'broker.invalid'")],
)
def test_a_sensor_without_its_broker_says_what_it_tries_and_why_it_fails(
    tmp_path: Path, sensors: list[Sensor], where: str, reason: str
) -> None:
    from tools.broker import free_port

    url = f"mqtt://127.0.0.1:{free_port()}" if where == "refused" else "mqtt://broker.invalid:1883"
    args = ["--id", "lost", "--site", SITE, "--broker", url, "--state-dir", str(tmp_path / "st")]
    s = Sensor(tmp_path, *args, "--synthetic", "quiet", "--heap", "256K")
    sensors.append(s)
    wait_for_line(s, "retry in", 30)
    time.sleep(8.0)
    assert s.stop() == 0
    # on stderr, beside the command's own messages, as on the device's serial console
    err = s.err.read_text()
    assert f"connecting to {url}" in err
    failures = [line for line in err.splitlines() if "retry in" in line]
    assert all(reason in line for line in failures), failures
    # the back-off sets the pace: 0.25-0.5 s after the first failure, doubling
    # each time, so eight seconds hold at most six more lines
    assert 2 <= len(failures) <= 7, failures
    delays = [float(line.rsplit("retry in ", 1)[1].split()[0]) for line in failures]
    assert delays == sorted(delays), delays
