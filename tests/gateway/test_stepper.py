"""gateway.stepper: the running policy state, a step at a time, and releasing at stop or
after a restart through the policy's own `release_all` and `release_unowned`."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from gateway.config import SiteConfig, parse_config
from gateway.events import LevelEvent, Tick
from gateway.policy import Decision, EpisodeEnded, Override, Release, initial_state
from gateway.stepper import Stepper

# Friday 2026-11-20 23:30 in Brussels
NIGHT = dt.datetime(2026, 11, 20, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))).timestamp()


def config(**zone: Any) -> SiteConfig:
    def one(zid: str, sensor: str, groups: list[str]) -> dict[str, Any]:
        return {
            "id": zid,
            "sensors": [sensor],
            "light_groups": groups,
            "schedule": ["00:00-24:00"],
            "threshold_db": 70.0,
            "hold_s": 120,
            "max_hold_s": 600,
            "cooldown_s": 60,
            "messages": {"en": "People are sleeping here."},
            **zone,
        }

    zones = [one("loud", "a", ["g1", "g2"]), one("calm", "b", ["g3"])]
    return parse_config({"site": {"id": "leuven"}, "zones": zones})


def loud(stepper: Stepper, seconds: int, now: float = NIGHT) -> tuple[float, list[Decision]]:
    """`seconds` of loud 1 s records from sensor "a" (zone "loud"), a tick after each."""
    out: list[Decision] = []
    for seq in range(1, seconds + 1):
        now += 1.0
        stepper.step(LevelEvent("a", seq, now - 1.0, now, 80.0, 85.0, 80.0, (), now), now, out)
        stepper.step(Tick(now), now, out)
    return now, out


def test_step_replaces_the_state_and_collects_the_decisions() -> None:
    stepper = Stepper(config())
    before = stepper.state
    _, out = loud(stepper, 1)
    assert stepper.state is not before
    assert {d.group for d in out if isinstance(d, Override)} == {"g1", "g2"}
    assert stepper.state.zones["loud"].episode is not None


def test_release_all_numbers_its_releases_as_the_policy_ends_an_episode() -> None:
    cfg = config()
    stepper = Stepper(cfg)
    now, out = loud(stepper, 3)
    sent = [d for d in out if isinstance(d, Override)]
    episode = stepper.state.zones["loud"].episode
    assert episode is not None and sent
    calm_before = stepper.state.zones["calm"]

    # the same state, left to end by itself (sensors silent past the hold)
    natural = Stepper(cfg)
    natural.state = stepper.state
    later = now + 10 * cfg.zones_by_id["loud"].hold_s
    ended: list[Decision] = []
    natural.step(Tick(later), later, ended)
    natural_ids = [d.cmd_id for d in ended if isinstance(d, Release)]

    stop = now + 1.0
    decisions = stepper.release_all("shutdown", stop)
    releases = [d for d in decisions if isinstance(d, Release)]
    assert [r.cmd_id for r in releases] == natural_ids
    assert not {r.cmd_id for r in releases} & {o.cmd_id for o in sent}
    assert [r.group for r in releases] == [o.group for o in episode.overrides]
    assert all(
        r.reason == "shutdown" and r.at == stop and r.episode == episode.id for r in releases
    )
    # the episode's end comes after its releases, as when the policy ends it
    assert decisions[-1] == EpisodeEnded("loud", episode.id, stop, "shutdown", episode.control)
    zs = stepper.state.zones["loud"]
    assert zs.episode is None
    assert zs.cooldown_until == stop + cfg.zones_by_id["loud"].cooldown_s
    assert stepper.state.zones["calm"] is calm_before


def test_release_all_without_episodes_changes_nothing() -> None:
    stepper = Stepper(config())
    before = stepper.state
    assert stepper.release_all("shutdown", NIGHT) == []
    assert stepper.state is before


def test_release_unowned_releases_only_what_no_episode_of_the_state_knows() -> None:
    stepper = Stepper(config())
    now, out = loud(stepper, 1)
    known = [d for d in out if isinstance(d, Override)]
    assert known
    lost = dataclasses.replace(known[0], cmd_id="loud-9-deadbeef.1", episode="loud-9-deadbeef")
    releases = stepper.release_unowned([*known, lost], now)
    assert releases == [
        Release(lost.zone, lost.group, f"{lost.cmd_id}.r", "restart", now, lost.episode)
    ]
    assert not {r.cmd_id for r in releases} & {o.cmd_id for o in known}
    # a fresh state knows none of them
    stepper.state = initial_state(stepper.config)
    assert [r.group for r in stepper.release_unowned(known, now)] == [o.group for o in known]
