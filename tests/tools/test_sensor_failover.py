"""`hushlight sensor` with several brokers (`--broker URL1,URL2`): the firmware
moves to the next broker when the one in use stops answering and loses no
record on the way.

Two separate Mosquittos share no sessions, so nothing but the sensor's own
store and its resend of unacknowledged records after a reconnect keeps the
records that were in flight when the first broker stopped: a subscriber on
each broker, and the two together must hold every seq.  The same move on the
RabbitMQ cluster, whose nodes share the sessions: tests/cluster/test_failover.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interpreters import on_interpreter, upy_interpreter  # noqa: F401  (fixtures)
from tests.tools.test_sensor import public_dir, readable_ca  # noqa: F401  (a fixture)
from tests.tools.virtual import SITE, Sensor, Sub
from tools import sensor
from tools.broker import Mosquitto, free_port
from tools.cli import main
from tools.console import Console
from tools.errors import UsageError

WAIT = 30.0  # bound of each wait; a sensor that works takes a few seconds


@pytest.fixture
def sensors() -> Iterator[list[Sensor]]:
    started: list[Sensor] = []
    yield started
    for s in started:
        s.kill()


def seqs(*subs: Sub) -> set[int]:
    return {int(r["seq"]) for sub in subs for r in sub.of("levels")}


def line_with(sensor: Sensor, needle: str) -> str:
    found = [line for line in sensor.output().splitlines() if needle in line]
    assert found, f"no {needle!r} in the sensor's output:\n{sensor.output()}"
    return found[-1]


def test_the_sensor_moves_to_the_second_broker_and_loses_no_record(
    tmp_path: Path, sensors: list[Sensor]
) -> None:
    with Mosquitto() as first, Mosquitto() as second:
        topic = f"hushlight/v1/{SITE}/sensors/fo/#"
        subs = [Sub(first.port, topic), Sub(second.port, topic)]
        for sub in subs:
            sub.ready()
        brokers = f"{first.url},{second.url}"
        # 4 records a second; a short keepalive so that a silent link would be found soon too
        args = ["--id", "fo", "--site", SITE, "--broker", brokers, "--synthetic", "street"]
        args += ["--speed", "4", "--keepalive", "5", "--state-dir", str(tmp_path / "st")]
        s = Sensor(tmp_path, *args, "--console")
        sensors.append(s)
        try:
            with Console(s.console_path(), timeout=10) as con:
                subs[0].wait_for(lambda t, v: t.endswith("/levels") and v["seq"] >= 8, WAIT, "8")
                [status] = con.command("status")
                assert status["broker_in_use"] == first.url, status
                first.stop()
                # records made after the move arrive through the second broker
                after = max(seqs(*subs)) + 12
                subs[1].wait_for(
                    lambda t, v: t.endswith("/levels") and v["seq"] >= after, WAIT, "catch-up"
                )
                [status] = con.command("status")
                [setting] = con.command("get broker")
            got = seqs(*subs)
            assert got >= set(range(after + 1)), sorted(set(range(after + 1)) - got)
            # the second broker saw only what the first did not acknowledge
            assert min(seqs(subs[1])) > 8, sorted(seqs(subs[1]))[:5]
            assert status["broker_in_use"] == second.url and status["broker_connected"] is True
            assert setting["value"] == brokers  # the console shows the configured list
            # the log says where it went and why it left the first broker
            moved = line_with(s, f"connected to {second.url} again")
            assert f"cannot connect to 127.0.0.1:{first.port}" in moved, moved
            assert f"trying {second.url} next" in line_with(s, "retry in")
            assert s.stop() == 0
        finally:
            for sub in subs:
                sub.close()


def test_a_broker_that_never_answers_is_passed_over_at_start(
    broker: Mosquitto, tmp_path: Path, sensors: list[Sensor]
) -> None:
    nobody = f"mqtt://127.0.0.1:{free_port()}"
    sub = Sub(broker.port, f"hushlight/v1/{SITE}/sensors/fo2/#")
    sub.ready()
    try:
        args = ["--id", "fo2", "--site", SITE, "--broker", f"{nobody},{broker.url}"]
        args += ["--synthetic", "quiet", "--state-dir", str(tmp_path / "st")]
        s = Sensor(tmp_path, *args)
        sensors.append(s)
        sub.wait_for(lambda t, v: t.endswith("/status") and v["state"] == "online", WAIT, "birth")
        first = line_with(s, "connected to")
        assert f"connected to {broker.url} again" in first, first
        assert "connection refused" in first, first
        assert s.stop() == 0
    finally:
        sub.close()


def test_over_tls_a_broker_the_pinned_ca_did_not_sign_is_passed_over(
    tmp_path: Path,
    public_dir: Path,  # noqa: F811  (the fixture)
    sensors: list[Sensor],
) -> None:
    city = readable_ca(public_dir / "city", "the city's CA")
    other = readable_ca(public_dir / "other", "somebody else's CA")
    with (
        Mosquitto(tls=(other.ca, other.cert, other.key)) as foreign,
        Mosquitto(tls=(city.ca, city.cert, city.key)) as good,
    ):
        sub = Sub(good.port, f"hushlight/v1/{SITE}/sensors/fo3/#")
        sub.ready()
        try:
            args = ["--id", "fo3", "--site", SITE, "--broker", f"{foreign.tls_url},{good.tls_url}"]
            args += ["--ca", str(city.ca), "--synthetic", "quiet"]
            s = Sensor(tmp_path, *args, "--state-dir", str(tmp_path / "st"))
            sensors.append(s)
            sub.wait_for(lambda t, v: t.endswith("/levels"), WAIT, "levels over TLS")
            first = line_with(s, "connected to")
            assert f"connected to {good.tls_url} again" in first, first
            assert f"cannot connect to 127.0.0.1:{foreign.tls_port}" in first, first
            assert "certificate is not correctly signed" in first, first
            assert s.stop() == 0
        finally:
            sub.close()


@pytest.mark.parametrize(
    ("brokers", "needles"),
    [
        ("mqtt://a:1,mqtt://b:99999", ["'mqtt://b:99999'", "1..65535"]),
        ("mqtt://a:1,mqtts://b:2", ["'mqtts://b:2'", "same scheme"]),
        ("mqtt://a:1,,mqtt://b:2", ["empty entry", "number 2"]),
        ("mqtt://a:1,", ["empty entry", "number 2"]),
        ("mqtt://a:1,mqtt://a:1", ["'mqtt://a:1'", "twice"]),
    ],
)
def test_a_bad_broker_list_is_one_line_naming_the_entry(
    brokers: str, needles: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sensor", "--id", "a", "--site", "s", "--broker", brokers, "--synthetic", "quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hushlight sensor: error: --broker: ")
    for needle in needles:
        assert needle in err


def test_a_list_of_mqtts_brokers_needs_the_ca_and_goes_into_the_config_as_given(
    tmp_path: Path,
) -> None:
    parser = argparse.ArgumentParser()
    sensor.configure(parser)
    brokers = "mqtts://n1.city:8883, mqtts://n2.city"
    base = ["--id", "a", "--site", "s", "--broker", brokers, "--synthetic", "quiet"]
    with pytest.raises(UsageError, match="needs --ca"):
        sensor.settings(parser.parse_args(base))
    ca = tmp_path / "ca.pem"
    ca.write_text("the CA")
    out = sensor.settings(parser.parse_args([*base, "--ca", str(ca)]))
    assert (out["broker"], out["ca_file"]) == (brokers, "ca.pem")
