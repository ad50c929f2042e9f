"""firmware/hushlight/config.py in the MicroPython unix port: config.json
validation, remote config applied whole or not at all, persisted atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.firmware.upyrun import mp

BASE = {"id": "ns-01", "site": "leuven", "broker": "mqtt://10.0.0.5:1883"}

LOAD = """
import json
from hushlight.config import Config
from hushlight.errors import ConfigError
try:
    c = Config()
    print(json.dumps({"ok": c.values}))
except ConfigError as e:
    print(json.dumps({"error": str(e)}))
"""


def load(tmp_path: Path, **values: object) -> dict[str, object]:
    (tmp_path / "config.json").write_text(json.dumps({**BASE, **values}))
    result: dict[str, object] = mp(LOAD, tmp_path)
    return result


def test_the_example_config_is_valid(tmp_path: Path) -> None:
    example = json.loads((Path(__file__).parents[2] / "firmware/config.example.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(example))
    got = mp(LOAD, tmp_path)
    assert got["ok"] == example


@pytest.mark.parametrize(
    ("values", "needles"),
    [
        ({"id": "NS_01"}, ["NS_01", "a-z"]),
        ({"broker": "tcp://x:1"}, ["tcp://x:1", "mqtt://"]),
        ({"broker": "mqtt://x:99999"}, ["99999", "1..65535"]),
        ({"keepalive_s": 0}, ["keepalive_s", "5..600"]),
        ({"interval_s": 0.3}, ["interval_s", "0.3"]),
        ({"peak_threshold_db": "loud"}, ["peak_threshold_db"]),
        ({"console": "usb"}, ["console", "stdio"]),
        ({"colour": "red"}, ["'colour'", "config.example.json"]),
    ],
)
def test_bad_settings_are_refused_with_the_value(
    tmp_path: Path, values: dict[str, object], needles: list[str]
) -> None:
    got = load(tmp_path, **values)
    assert "error" in got, got
    for needle in needles:
        assert needle in str(got["error"])


def test_a_missing_config_names_the_tool_to_write_it(tmp_path: Path) -> None:
    got = mp(LOAD, tmp_path)
    assert "config.json" in got["error"] and "provision" in got["error"]


REMOTE = """
import json
from hushlight.config import Config
from hushlight.errors import ConfigError
c = Config()
out = []
for msg in MESSAGES:
    try:
        new, changed = c.decode_remote(msg)
        c.commit(new)
        out.append(["ok", sorted(changed)])
    except ConfigError as e:
        out.append(["error", str(e)])
v = c.values
print(json.dumps([out, v["config_rev"], v["interval_s"], v["peak_threshold_db"]]))
"""


def test_remote_config_is_applied_whole_or_not_at_all(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(BASE))
    messages = [
        '{"rev": 3, "interval_s": 2, "peak_threshold_db": 65}',
        '{"rev": 4, "interval_s": 5, "peak_threshold_db": 900}',  # one bad key: none applied
        '{"rev": 5, "interval_s": 5, "colour": "red"}',  # unknown key: none applied
        '{"interval_s": 5}',  # no rev
        "not json",
    ]
    code = REMOTE.replace("MESSAGES", json.dumps(messages))
    out, rev, interval, threshold = mp(code, tmp_path)
    assert out[0] == ["ok", ["config_rev", "interval_s", "peak_threshold_db"]]
    assert [o[0] for o in out[1:]] == ["error"] * 4
    assert "peak_threshold_db" in out[1][1] and "900" in out[1][1]
    assert "colour" in out[2][1]
    assert "rev" in out[3][1]
    assert (rev, interval, threshold) == (3, 2.0, 65.0)
    # persisted with an atomic replace: the file holds the applied values, no temp left
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["config_rev"], saved["interval_s"], saved["peak_threshold_db"]) == (3, 2.0, 65.0)
    assert not (tmp_path / "config.json.tmp").exists()


def test_a_replace_cut_short_by_power_loss_still_boots(tmp_path: Path) -> None:
    # only the new file survived, still under its temporary name
    (tmp_path / "config.json.tmp").write_text(json.dumps({**BASE, "interval_s": 2}))
    got = mp(LOAD, tmp_path)
    assert got["ok"]["interval_s"] == 2
