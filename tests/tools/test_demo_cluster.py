"""tools/demo_cluster.py: what the cluster demo counts, on hand-made inputs.

The whole demo runs in tests/cluster/test_demo_cluster.py.
"""

from __future__ import annotations

import tomllib
from typing import Any

from gateway.config import parse_config
from tools import demo_cluster
from tools.demo_cluster import (
    OwnerWatch,
    count_records,
    doubled_overrides,
    episode_of,
    lapses,
)


def test_the_cluster_site_file_shares_the_zones_through_postgresql_leases() -> None:
    text = demo_cluster.cluster_config_text(
        "mqtt://127.0.0.1:1884", "postgresql://127.0.0.1:5432/x", 8081, "a-1", "t" * 32
    )
    config = parse_config(tomllib.loads(text), source="cluster demo")
    assert config.storage.url == "postgresql://127.0.0.1:5432/x"
    assert config.storage.lease_s == demo_cluster.LEASE_S
    assert config.client_id == "hushlight-gateway-demo-a-1"
    assert [z.id for z in config.zones] == ["collegeberg", "stuk"]
    assert config.sensor_config is not None
    assert config.sensor_config.rev == demo_cluster.CONFIG_REV


def test_a_zone_counts_without_an_owner_from_its_lease_running_out_to_the_next_owner() -> None:
    watch = OwnerWatch()
    watch.sample({"z": (None, 0, False)}, 0.0)  # not yet taken: start-up is no gap
    watch.sample({"z": ("a", 1, True)}, 1.0)
    watch.sample({"z": ("a", 1, False)}, 5.0)  # a's lease ran out
    watch.sample({"z": ("a", 1, False)}, 5.25)
    watch.sample({"z": ("b", 2, True)}, 5.75)
    watch.sample({"z": ("b", 2, True)}, 6.0)
    assert watch.longest == {"z": 0.75}
    assert watch.taken["z"] == (5.75, "b")
    watch.sample({"z": (None, 2, False)}, 7.0)  # handed back, still open at the end
    watch.finish(9.0)
    assert watch.longest == {"z": 2.0}


def test_overrides_of_two_owners_for_different_episodes_at_once_count_as_a_double_nudge() -> None:
    def override(cmd: str, epoch: int, expires: float, level: float | None = 40.0) -> Any:
        return {"cmd_id": cmd, "lease_epoch": epoch, "level": level, "expires_at": expires}

    # a's episode e1 in force until 100; b takes over (epoch 2) and renews e1: one episode
    taken_over = [
        (10.0, "g", override("e1.1", 1, 100.0)),
        (50.0, "g", override("e1.2", 2, 140.0)),
    ]
    assert doubled_overrides(taken_over) == []
    # b starts its own episode while a's is in force: a second nudge
    twice = [
        (10.0, "g", override("e1.1", 1, 100.0)),
        (50.0, "g", override("e2.1", 2, 140.0)),
    ]
    assert [e for e, _ in doubled_overrides(twice)] == ["e2"]
    # ... but not once a's has expired or been released
    after = [(10.0, "g", override("e1.1", 1, 100.0)), (101.0, "g", override("e2.1", 2, 140.0))]
    assert doubled_overrides(after) == []
    released = [
        (10.0, "g", override("e1.1", 1, 100.0)),
        (20.0, "g", override("e1.2", 1, 20.0, level=None)),
        (50.0, "g", override("e2.1", 2, 140.0)),
    ]
    assert doubled_overrides(released) == []
    # the same command from two owners
    same = [(10.0, "g", override("e1.1", 1, 100.0)), (11.0, "g", override("e1.1", 2, 100.0))]
    assert [e for e, _ in doubled_overrides(same)] == ["e1"]
    # a stale epoch is refused by the lights: it never takes effect
    stale = [(10.0, "g", override("e1.1", 2, 100.0)), (11.0, "g", override("e2.1", 1, 100.0))]
    assert doubled_overrides(stale) == []


def test_an_override_that_runs_out_before_its_episodes_next_is_a_lapse() -> None:
    def override(cmd: str, epoch: int, expires: float, level: float | None = 40.0) -> Any:
        return {"cmd_id": cmd, "lease_epoch": epoch, "level": level, "expires_at": expires}

    sets = [
        (10.0, "g", override("e1.1", 1, 40.0)),
        (44.5, "g", override("e1.3", 2, 80.0)),  # a's e1.1 ran out at 40; b renewed at 44.5
        (70.0, "g", override("e1.4", 2, 110.0)),  # renewed in time
        (111.0, "g", override("e1.5", 2, 111.0, level=None)),  # the release: no lapse
        (150.0, "g", override("e2.1", 2, 180.0)),  # a new episode: no lapse
        (190.0, "g", override("e2.2", 1, 220.0)),  # a stale epoch: refused, not taken
    ]
    assert lapses(sets) == [4.5]


def test_a_commands_episode_is_its_id_before_the_command_number() -> None:
    assert episode_of("collegeberg-1781298000-1.3") == "collegeberg-1781298000-1"
    assert episode_of("collegeberg-1781298000-1.3.r") == "collegeberg-1781298000-1"


def test_records_are_matched_to_the_minute_rows_per_sensor_and_minute() -> None:
    heard = {"s1": {0: 0, 1: 0, 2: 60, 3: 60}, "s2": {0: 0, 1: 60}}
    # s1: minute 0 complete, minute 60 one short; s2: minute 0 twice, minute 60 missing,
    # and one record the demo did not hear (made 3)
    stored = {("s1", 0): 2, ("s1", 60): 1, ("s2", 0): 2}
    lost, twice, kept = count_records({"s1": 4, "s2": 3}, heard, stored)
    assert (lost, twice, kept) == (1 + 2, 1, 3 + 1)
    # a row of a minute the demo heard nothing of is counted twice, not as a record made
    assert count_records({"s1": 1}, {"s1": {0: 0}}, {("s1", 0): 1, ("s1", 60): 5}) == (0, 5, 1)
