"""The sensor's `broker` setting as a list of brokers to fail over across
(firmware/hushlight/configcheck.py), checked in the MicroPython unix port."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.firmware.upyrun import mp

BASE = {"id": "ns-01", "site": "leuven"}

LOAD = """
import json
from hushlight import once
from hushlight.config import Config
from hushlight.errors import ConfigError
try:
    c = Config()
    tls, brokers = once("configcheck").parse_brokers(c["broker"])
    print(json.dumps({"ok": [tls, [list(b) for b in brokers]]}))
except ConfigError as e:
    print(json.dumps({"error": str(e)}))
"""


def load(tmp_path: Path, broker: object) -> dict[str, object]:
    (tmp_path / "config.json").write_text(json.dumps({**BASE, "broker": broker}))
    result: dict[str, object] = mp(LOAD, tmp_path)
    return result


@pytest.mark.parametrize(
    ("broker", "expected"),
    [
        ("mqtt://10.0.0.5:1883", [False, [["mqtt://10.0.0.5:1883", "10.0.0.5", 1883]]]),
        (
            "mqtt://h1:1883,mqtt://h2:1884,mqtt://h3:1885",
            [
                False,
                [
                    ["mqtt://h1:1883", "h1", 1883],
                    ["mqtt://h2:1884", "h2", 1884],
                    ["mqtt://h3:1885", "h3", 1885],
                ],
            ],
        ),
        (
            "mqtts://n1.city, mqtts://[fd00::5]",
            [True, [["mqtts://n1.city", "n1.city", 8883], ["mqtts://[fd00::5]", "fd00::5", 8883]]],
        ),
    ],
)
def test_the_brokers_are_read_once_into_url_host_and_port(
    tmp_path: Path, broker: str, expected: list[object]
) -> None:
    assert load(tmp_path, broker) == {"ok": expected}


@pytest.mark.parametrize(
    ("broker", "needles"),
    [
        ("mqtt://h1:1883,mqtt://h2:70000", ["'mqtt://h2:70000'", "1..65535"]),
        ("mqtt://h1:1883,ftp://h2", ["'ftp://h2'", "mqtt://"]),
        ("mqtts://h1,mqtt://h2", ["'mqtt://h2'", "same scheme"]),
        ("mqtt://h1,,mqtt://h2", ["empty entry", "number 2"]),
        ("mqtt://h1,", ["empty entry", "number 2"]),
        ("", ["names no broker"]),
        ("mqtt://h1,mqtt://h1:1883", ["'mqtt://h1:1883'", "twice"]),
        (["mqtt://h1", "mqtt://h2"], ["not a URL"]),
    ],
)
def test_a_bad_list_is_refused_naming_the_entry(
    tmp_path: Path, broker: object, needles: list[str]
) -> None:
    got = load(tmp_path, broker)
    assert "error" in got, got
    for needle in needles:
        assert needle in str(got["error"]), got
