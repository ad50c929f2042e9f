"""`hushlight provision` and `hushlight flash` with a sensor's broker list (the
nodes of a cluster to fail over across, separated by commas): provisioning
writes the list into the config, flash's check of a config (the firmware's
own rules, run in MicroPython) accepts it and refuses a bad one naming the
entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.firmware.conftest import make_ca
from tests.interpreters import on_interpreter, upy_interpreter  # noqa: F401  (fixtures)
from tools import flash, provision
from tools.cli import main
from tools.errors import UsageError


def provision_out(tmp_path: Path, broker: str, *more: str) -> int:
    args = ["provision", "--out", str(tmp_path / "ns-01.json"), "--id", "ns-01", "--site"]
    args += ["leuven", "--wifi-ssid", "street", "--wifi-password", "pw", "--broker", broker]
    return main([*args, *more])


def test_provision_writes_every_broker_of_the_list_with_its_port(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki", "city CA").ca
    nodes = "mqtts://n1.city, mqtts://n2.city:8884,mqtts://[fd00::5]"
    assert provision_out(tmp_path / "out", nodes, "--ca", str(ca)) == 0
    config = json.loads((tmp_path / "out" / "ns-01.json").read_text())
    assert config["broker"] == "mqtts://n1.city:8883,mqtts://n2.city:8884,mqtts://[fd00::5]:8883"
    # and flash takes it: the firmware starts with what was written
    _, files = flash.check_config(tmp_path / "out" / "ns-01.json")
    assert [f.name for f in files] == ["config.json", "ca.pem"]


@pytest.mark.parametrize(
    ("broker", "needles"),
    [
        ("mqtts://n1.city,mqtt://n2.city", ["'mqtt://n2.city'", "same scheme"]),
        ("mqtts://n1.city,,mqtts://n2.city", ["empty entry", "number 2"]),
        ("mqtts://n1.city,mqtts://n2.city:0", ["'mqtts://n2.city:0'", "1..65535"]),
    ],
)
def test_provision_refuses_a_bad_list_naming_the_entry(
    tmp_path: Path, broker: str, needles: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UsageError) as err:
        provision.parse_brokers(broker)
    for needle in needles:
        assert needle in str(err.value)
    assert provision_out(tmp_path, broker) == 2
    out = capsys.readouterr().err.strip()
    assert len(out.splitlines()) == 1 and all(needle in out for needle in needles), out
    assert not (tmp_path / "ns-01.json").exists()


@pytest.mark.parametrize(
    ("broker", "needles"),
    [
        ("mqtt://n1.city,mqtts://n2.city", ["'mqtts://n2.city'", "same scheme"]),
        ("mqtt://n1.city,", ["empty entry", "number 2"]),
    ],
)
def test_flash_refuses_a_config_with_a_bad_list_before_touching_the_board(
    tmp_path: Path, broker: str, needles: list[str]
) -> None:
    assert provision_out(tmp_path, "mqtt://n1.city") == 0
    path = tmp_path / "ns-01.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "broker": broker}))
    with pytest.raises(UsageError) as err:
        flash.check_config(path)
    assert "the firmware would not start with it" in str(err.value)
    for needle in needles:
        assert needle in str(err.value)
