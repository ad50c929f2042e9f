"""The roll-out plan of `hushlight ota` (tools.ota.plan): zone limits, canaries, skips."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from zoneinfo import ZoneInfo

import pytest

from gateway.schedule import parse_schedule
from tools.ota import Plan, SensorState, active_zones, plan, zone_limits

V = "0.2.0"
OLD = SensorState(online=True, fw="0.1.0", ota="idle")
# the demo's street: two zones of four sharing ns-04
STREET = {
    "collegeberg": ["ns-01", "ns-02", "ns-03", "ns-04"],
    "stuk": ["ns-04", "ns-05", "ns-06", "ns-07"],
}


def _all_old(zones: Mapping[str, Sequence[str]]) -> dict[str, SensorState]:
    return {s: OLD for members in zones.values() for s in members}


def _phases(p: Plan) -> tuple[tuple[str, ...], ...]:
    return p.canaries + p.waves


def _assert_within_limits(p: Plan, zones: Mapping[str, Sequence[str]]) -> None:
    for wave in _phases(p):
        for zone, members in zones.items():
            together = [s for s in wave if s in members]
            assert len(together) <= p.limits[zone], (wave, zone)


def test_no_zone_has_more_than_its_share_updating_at_once() -> None:
    p = plan(V, _all_old(STREET), STREET)
    assert p.limits == {"collegeberg": 1, "stuk": 1}  # 0.34 of 4, rounded down
    _assert_within_limits(p, STREET)
    # every sensor exactly once
    assert sorted(p.sensors) == sorted({s for m in STREET.values() for s in m})
    # after the canary, no more waves than the busiest zone needs: its sensors
    # left, a limit at a time
    (canary,) = p.canaries
    needed = max(math.ceil(len(set(m) - set(canary)) / p.limits[z]) for z, m in STREET.items())
    assert len(p.waves) == needed


def test_a_sensor_in_two_zones_counts_in_each() -> None:
    p = plan(V, _all_old(STREET), STREET, canary=0)
    (shared_wave,) = [w for w in p.waves if "ns-04" in w]
    assert shared_wave == ("ns-04",)


def test_a_larger_share_puts_more_of_a_zone_in_a_wave() -> None:
    zones = {"z": [f"s-{i}" for i in range(10)]}
    p = plan(V, _all_old(zones), zones, canary=0, max_share=0.5)
    assert p.limits == {"z": 5}
    assert [len(w) for w in p.waves] == [5, 5]
    _assert_within_limits(p, zones)


def test_a_small_zone_still_updates_one_at_a_time() -> None:
    assert zone_limits({"tiny": ["a", "b"], "three": ["c", "d", "e"]}, 0.34) == {
        "tiny": 1,
        "three": 1,
    }
    assert zone_limits({"three": ["c", "d", "e"]}, 1 / 3) == {"three": 1}
    with pytest.raises(ValueError, match="max share 0"):
        zone_limits({"z": ["a"]}, 0.0)


def test_the_default_canary_is_one_sensor_in_a_single_zone() -> None:
    p = plan(V, _all_old(STREET), STREET)
    assert len(p.canaries) == 1 and len(p.canaries[0]) == 1
    (canary,) = p.canaries[0]
    assert sum(canary in m for m in STREET.values()) == 1
    assert canary not in {s for w in p.waves for s in w}


def test_named_canaries_go_first_and_within_the_limits() -> None:
    p = plan(V, _all_old(STREET), STREET, canary=["ns-02", "ns-03", "ns-06"])
    assert sorted(s for w in p.canaries for s in w) == ["ns-02", "ns-03", "ns-06"]
    # ns-02 and ns-03 share a zone with a limit of one: two canary waves
    assert len(p.canaries) == 2
    _assert_within_limits(p, STREET)
    assert not {"ns-02", "ns-03", "ns-06"} & {s for w in p.waves for s in w}


def test_no_canaries_when_asked_for_none() -> None:
    p = plan(V, _all_old(STREET), STREET, canary=0)
    assert p.canaries == ()
    assert len(p.sensors) == 7


def test_a_canary_that_is_skipped_is_an_error_that_says_why() -> None:
    fleet = _all_old(STREET)
    fleet["ns-05"] = SensorState(online=False, fw="0.1.0")
    with pytest.raises(ValueError, match=r"canary ns-05 .*\(offline\)"):
        plan(V, fleet, STREET, canary=["ns-05"])


def test_skips_say_why() -> None:
    fleet = _all_old(STREET)
    fleet["ns-01"] = SensorState(online=True, fw=V, ota="confirmed", ota_version=V)
    fleet["ns-02"] = SensorState(online=False, fw="0.1.0")
    fleet["ns-03"] = SensorState(online=True, fw="0.3.0")
    del fleet["ns-05"]
    fleet["ns-06"] = SensorState(online=True, fw="0.1.0", ota="staging", ota_version="0.2.1")
    # an interrupted staging of this very release resumes: not skipped
    fleet["ns-07"] = SensorState(online=True, fw="0.1.0", ota="staging", ota_version=V)
    p = plan(V, fleet, STREET)
    assert p.skipped == {
        "ns-01": f"already on {V}",
        "ns-02": "offline",
        "ns-03": f"runs 0.3.0, newer than {V}",
        "ns-05": "no status on the broker (never connected, or not this site)",
        "ns-06": "busy with another update (staging 0.2.1)",
    }
    assert sorted(p.sensors) == ["ns-04", "ns-07"]


def test_an_offline_sensor_already_on_the_version_counts_as_done() -> None:
    fleet = {"a": SensorState(online=False, fw=V)}
    assert plan(V, fleet, {"z": ["a"]}).skipped == {"a": f"already on {V}"}


def test_only_the_sensors_asked_for() -> None:
    p = plan(V, _all_old(STREET), STREET, sensors=["ns-01", "ns-05", "ns-04"], canary=0)
    assert sorted(p.sensors) == ["ns-01", "ns-04", "ns-05"]
    _assert_within_limits(p, STREET)
    # the limit is a share of the whole zone, not of the sensors asked for
    assert p.limits == {"collegeberg": 1, "stuk": 1}


def test_sensors_outside_every_zone_have_no_limit() -> None:
    fleet = {**_all_old(STREET), "spare-1": OLD, "spare-2": OLD}
    p = plan(V, fleet, STREET, canary=0)
    assert {"spare-1", "spare-2"} <= set(p.sensors)
    _assert_within_limits(p, STREET)
    assert len(p.waves) == max(len(m) for m in STREET.values())


def test_active_hours_name_the_zone_and_its_window() -> None:
    tz = ZoneInfo("Europe/Brussels")
    schedules = {
        "night": parse_schedule(["mon-sun 23:00-05:00"]),
        "evening": parse_schedule(["fri,sat 20:00-22:00"]),
    }
    # Wednesday 2026-06-10, 01:30 in Leuven
    at = dt.datetime(2026, 6, 10, 1, 30, tzinfo=tz).timestamp()
    found = active_zones(["night", "evening"], schedules, tz, at)
    assert [(z, text) for z, text, _ in found] == [("night", "mon-sun 23:00-05:00")]
    assert found[0][2] == dt.datetime(2026, 6, 10, 5, 0, tzinfo=tz).timestamp()
    noon = dt.datetime(2026, 6, 10, 12, 0, tzinfo=tz).timestamp()
    assert active_zones(["night", "evening"], schedules, tz, noon) == []
