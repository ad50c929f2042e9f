"""gateway.config: the example loads, defaults hold, every mistake is named with its key path."""

from __future__ import annotations

import copy
import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.config import DEFAULT_MESSAGES, SiteConfig, ZoneConfig, load_config, parse_config
from gateway.errors import ConfigError
from gateway.notify import nudge_payload
from gateway.policy import Nudge
from protocol import payloads

EXAMPLE = Path(__file__).parents[2] / "gateway" / "site.example.toml"


def minimal(**zone: Any) -> dict[str, Any]:
    z = {"id": "ns", "sensors": ["ns-01", "ns-02"], "light_groups": ["ns-lamps-1"], **zone}
    return {"site": {"id": "leuven"}, "zones": [z]}


def error_of(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(raw, source="site.toml")
    return str(err.value)


def test_example_loads_with_every_key() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.site_id == "leuven"
    assert [z.id for z in cfg.zones] == ["naamsestraat", "oude-markt"]
    # every field of every section is written in the example (commented keys count)
    text = EXAMPLE.read_text()
    written = set(re.findall(r"^#?\s*([a-z_]+)\s*=", text, flags=re.M))
    sections = {
        "site": {"id", "timezone", "stale_after_s"},
        "broker": {f.name for f in dataclasses.fields(cfg.broker)},
        "storage": {f.name for f in dataclasses.fields(cfg.storage)},
        "http": {f.name for f in dataclasses.fields(cfg.http)},
        "webpush": {f.name for f in dataclasses.fields(cfg.webpush)},
        # schedule is parsed into windows, kinds and messages are tables
        "zones": {f.name for f in dataclasses.fields(ZoneConfig)} - {"kinds", "messages"},
    }
    for section, names in sections.items():
        assert names <= written, f"[{section}] keys missing from the example: {names - written}"
    assert "[zones.kinds]" in text and "[zones.messages]" in text


def test_example_values_are_read() -> None:
    cfg = load_config(EXAMPLE)
    raw = tomllib.loads(EXAMPLE.read_text())
    zone = cfg.zones[0]
    rz = raw["zones"][0]
    assert zone.sensors == tuple(rz["sensors"])
    assert zone.schedule.texts == tuple(rz["schedule"])
    assert zone.threshold_db == rz["threshold_db"]
    assert zone.hold_s == rz["hold_s"] and zone.max_hold_s == rz["max_hold_s"]
    assert dict(zone.messages) == rz["messages"]
    assert dict(cfg.zones[1].kinds) == raw["zones"][1]["kinds"]
    # relative storage path is anchored at the config file's folder
    assert cfg.storage.path == EXAMPLE.parent / raw["storage"]["path"]


def test_defaults() -> None:
    cfg = parse_config(minimal())
    assert cfg.timezone == "Europe/Brussels"
    assert cfg.broker.url == "mqtt://127.0.0.1:1883"
    assert (cfg.broker.host, cfg.broker.port, cfg.broker.tls) == ("127.0.0.1", 1883, False)
    assert cfg.client_id == "hushlight-gateway-leuven"
    assert (cfg.http.host, cfg.http.port, cfg.http.token) == ("127.0.0.1", 8080, None)
    assert not cfg.webpush.enabled
    z = cfg.zones[0]
    assert z.schedule.texts == ("mon-sun 23:00-05:00",)
    assert (z.trigger, z.window_s, z.min_sensors, z.hold_s, z.max_hold_s) == (
        "laeq",
        10,
        1,
        600,
        1800,
    )
    assert z.variants == (("dim", 40.0),)


def test_a_zone_without_messages_nudges_with_the_default_text() -> None:
    # the nudge's contract needs a text: a zone configured without one must not make
    # every nudge fail to encode
    zone = parse_config(minimal()).zones[0]
    assert dict(zone.messages) == DEFAULT_MESSAGES
    nudge = Nudge(zone.id, "e1", 1_750_000_000.0, 71.0, "dim", dict(zone.messages), {}, ())
    decoded = payloads.decode_nudge(nudge_payload(nudge))
    assert decoded["message"] == DEFAULT_MESSAGES


def test_mqtts_port_and_lookups() -> None:
    raw = minimal()
    raw["broker"] = {"url": "mqtts://broker.example.org", "username": "gw", "password": "pw"}
    cfg = parse_config(raw)
    assert (cfg.broker.tls, cfg.broker.port) == (True, 8883)
    assert cfg.zones_of_sensor["ns-01"] == ("ns",)
    assert cfg.zones_of_group["ns-lamps-1"] == ("ns",)


def test_a_nudge_level_under_the_floor_is_refused_with_the_rule() -> None:
    text = error_of(minimal(nudge_level=10, floor_level=20))
    assert "zones[ns].nudge_level: 10 % is under floor_level 20 %" in text
    assert "floor_level <= every nudge level" in text
    text = error_of(minimal(kinds={"dark": 0, "bright": 95}, floor_level=30))
    assert "zones[ns].kinds.dark: 0 % is under floor_level 30 %" in text
    # the default nudge level (40) counts too
    assert "zones[ns].nudge_level: 40 % is under floor_level 50 %" in error_of(
        minimal(floor_level=50)
    )
    z = parse_config(minimal(kinds={"dark": 30, "bright": 95}, floor_level=30)).zones[0]
    assert dict(z.variants) == {"dark": 30.0, "bright": 95.0}


def test_zone_errors_name_the_zone_by_its_id_and_ids_state_the_rule() -> None:
    raw = minimal()
    raw["zones"].append(
        {"id": "collegeberg", "sensors": ["cb-01"], "light_groups": ["cb"], "threshold_db": 9}
    )
    assert "zones[collegeberg].threshold_db: expected a number of dB between 30 and 140" in (
        error_of(raw)
    )
    raw["zones"][1]["id"] = "College Berg"
    text = error_of(raw)
    assert "zones[1].id: expected an id matching [a-z0-9-]{1,32}" in text, text
    assert '"College Berg"' in text
    raw["zones"][1]["id"] = "collegeberg"
    raw["zones"][1]["threshold_db"] = 70
    raw["zones"][1]["sensors"] = ["CB 01"]
    assert (
        'zones[collegeberg].sensors[0]: expected a sensor id matching [a-z0-9-]{1,32}, got "CB 01"'
        in (error_of(raw))
    )


def test_kind_named_after_programme_level() -> None:
    z = parse_config(minimal(nudge_level=90, programme_level=60)).zones[0]
    assert z.variants == (("brighten", 90.0),)
    z = parse_config(minimal(nudge_level=60, programme_level=60)).zones[0]
    assert z.variants == (("steady", 60.0),)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"threshold_db": "loud"},
            'zones[ns].threshold_db: expected a number of dB between 30 and 140, got "loud"',
        ),
        (
            {"threshold_db": 200},
            "zones[ns].threshold_db: expected a number of dB between 30 and 140, got 200",
        ),
        (
            {"threshold_db": True},
            "zones[ns].threshold_db: expected a number of dB between 30 and 140, got true",
        ),
        ({"trigger": "lafmax"}, 'zones[ns].trigger: expected "laeq" or "peaks", got "lafmax"'),
        (
            {"window_s": 2.5},
            "zones[ns].window_s: expected a whole number of seconds between 1 and 3600, got 2.5",
        ),
        (
            {"min_sensors": 3},
            "zones[ns].min_sensors: expected at most the 2 sensors of the zone, got 3",
        ),
        ({"sensors": []}, "zones[ns].sensors: expected a non-empty list of sensor ids"),
        ({"sensors": ["NS 01"]}, "zones[ns].sensors[0]: expected a sensor id matching [a-z0-9-]"),
        ({"sensors": ["a", "a"]}, "zones[ns].sensors: 'a' is listed twice"),
        (
            {"light_groups": "g"},
            "zones[ns].light_groups: expected a non-empty list of light group ids",
        ),
        (
            {"schedule": ["mon-sun 23:00-25:00"]},
            "zones[ns].schedule[0]: 'mon-sun 23:00-25:00': '25:00'",
        ),
        ({"schedule": 5}, "zones[ns].schedule: expected a list of windows"),
        (
            {"max_hold_s": 60},
            "max_hold_s: expected a whole number of seconds between 600 (hold_s) and 86400,",
        ),
        (
            {"renew_before_s": 600},
            "renew_before_s: expected a whole number of seconds between 1 and 599 (hold_s - 1)",
        ),
        (
            {"control_fraction": 1.5},
            "zones[ns].control_fraction: expected a number between 0 and 1, got 1.5",
        ),
        (
            {"floor_level": -1},
            "zones[ns].floor_level: expected a number of percent between 0 and 100, got -1",
        ),
        ({"peaks_needed": 2}, 'zones[ns].peaks_needed: only applies with trigger = "peaks"'),
        (
            {"messages": {"english": "x"}},
            'zones[ns].messages.english: expected a language code such as "nl" or "en"',
        ),
        ({"messages": {"en": 3}}, "zones[ns].messages.en: expected the message text, got 3"),
        ({"kinds": {"Dim!": 30}}, "zones[ns].kinds.Dim!: a nudge kind is 1-32 characters"),
        (
            {"kinds": {"dim": 30}, "nudge_level": 30},
            "zones[ns].nudge_level: give either nudge_level or [zones[ns].kinds], not both",
        ),
        ({"hold": 600}, 'zones[ns].hold: unknown key in [zones[ns]]; did you mean "hold_s"?'),
        (
            {"treshold_db": 70},
            'zones[ns].treshold_db: unknown key in [zones[ns]]; did you mean "threshold_db"?',
        ),
    ],
)
def test_zone_errors_name_key_value_and_expectation(change: dict[str, Any], message: str) -> None:
    raw = minimal()
    raw["zones"][0].update(change)
    text = error_of(raw)
    assert text.startswith("site.toml: ")
    assert message in text


@pytest.mark.parametrize(
    ("section", "change", "message"),
    [
        (
            "site",
            {"timezone": "Europe/Leuven"},
            'site.timezone: expected an IANA time zone name such as "Europe/Brussels", '
            'got "Europe/Leuven"',
        ),
        (
            "site",
            {"id": "Leuven"},
            "site.id: expected an id matching [a-z0-9-]{1,32} (1-32 characters a-z, 0-9 and -), "
            'got "Leuven"',
        ),
        (
            "site",
            {"timezon": "UTC"},
            'site.timezon: unknown key in [site]; did you mean "timezone"?',
        ),
        (
            "broker",
            {"url": "http://x"},
            'broker.url: expected "mqtt://HOST[:PORT]" or "mqtts://HOST[:PORT]", got "http://x"',
        ),
        ("broker", {"url": "mqtt://h:99999"}, "broker.url: expected"),
        ("broker", {"ca": "ca.pem"}, "broker.ca: a CA file only applies to mqtts:// URLs"),
        ("broker", {"password": "pw"}, "broker.password: given without broker.username"),
        (
            "broker",
            {"keepalive": 1},
            "broker.keepalive: expected a whole number of seconds between 5 and 3600, got 1",
        ),
        (
            "http",
            {"port": 70000},
            "http.port: expected a whole number of a TCP port between 0 and 65535, got 70000",
        ),
        ("http", {"token": "short"}, "http.token: expected at least 16 characters"),
        (
            "http",
            {"max_subscriptions": 0},
            "http.max_subscriptions: expected a whole number of subscriptions between 1 and "
            "10000000, got 0",
        ),
        (
            "http",
            {"subscribe_per_minute": 2.5},
            "http.subscribe_per_minute: expected a whole number of requests a minute between 1 "
            "and 10000, got 2.5",
        ),
        (
            "http",
            {"trust_forwarded_for": "yes"},
            'http.trust_forwarded_for: expected true or false, got "yes"',
        ),
        (
            "webpush",
            {"subject": "me"},
            'webpush.subject: expected a "mailto:" or "https://" contact, got "me"',
        ),
        ("storage", {"path": 3}, "storage.path: expected a file path, got 3"),
        ("storage", {"pth": "x.db"}, 'storage.pth: unknown key in [storage]; did you mean "path"?'),
        (
            "storage",
            {"url": "mysql://u:secret@h/db"},
            "storage.url: expected a postgresql://user@host:port/database URL, got one starting "
            '"mysql://" (the rest not shown: it may hold a password); leave it out to keep the '
            "SQLite file of storage.path",
        ),
        (
            "storage",
            {"url": "postgresql://h/db", "path": "x.db"},
            "storage: give storage.path (one gateway, SQLite) or storage.url (gateways sharing "
            "PostgreSQL), not both",
        ),
        (
            "storage",
            {"url": "postgresql://h/db", "lease_s": 1},
            "storage.lease_s: expected",
        ),
    ],
)
def test_section_errors(section: str, change: dict[str, Any], message: str) -> None:
    raw = minimal()
    raw.setdefault(section, {}).update(change)
    assert message in error_of(raw)


def test_single_bracket_zones_table() -> None:
    raw = minimal()
    raw["zones"] = raw["zones"][0]
    assert "zones: write each zone as [[zones]] (double brackets)" in error_of(raw)


def test_top_level_unknown_key_and_missing_site_id() -> None:
    raw = minimal()
    raw["zone"] = []
    assert 'zone: unknown key in the top level; did you mean "zones"?' in error_of(raw)
    raw = minimal()
    del raw["site"]["id"]
    assert "site.id: missing; expected an id" in error_of(raw)


def test_duplicate_zone_and_shared_light_group() -> None:
    raw = minimal()
    raw["zones"].append(copy.deepcopy(raw["zones"][0]))
    assert "zones[1].id: 'ns' is already the id of zones[0]" in error_of(raw)
    raw["zones"][1]["id"] = "other"
    assert "zones[other].light_groups: 'ns-lamps-1' is already driven by zones[ns]" in error_of(raw)


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[site\nid = 1\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_config(bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[site]\nid = "x"\n[[zones]]\nid = "z"\nsensors = ["a"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(wrong)
    assert str(err.value).startswith(f"{wrong}: zones[z].light_groups:")


def test_relative_paths_follow_the_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    f = tmp_path / "conf" / "site.toml"
    f.write_text(
        '[site]\nid = "x"\n[storage]\npath = "data/h.db"\n'
        '[broker]\nurl = "mqtts://b:8884"\nca = "ca.pem"\n'
        '[webpush]\nvapid_private_key = "/etc/vapid.pem"\n'
    )
    cfg = load_config(f)
    assert cfg.storage.path == tmp_path / "conf" / "data" / "h.db"
    assert cfg.broker.ca == tmp_path / "conf" / "ca.pem"
    assert cfg.webpush.vapid_private_key == Path("/etc/vapid.pem") and cfg.webpush.enabled


def test_config_is_frozen() -> None:
    cfg = parse_config(minimal())
    assert isinstance(cfg, SiteConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.site_id = "other"  # type: ignore[misc]
