"""gateway.policy: triggers, holds, renewals, releases, cooldown, caps, controls, fail-safes.

Unit tests drive the policy through a small simulator; the property tests run
random event sequences against an independent model of the rules.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections import Counter
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import SiteConfig, parse_config
from gateway.errors import StateError
from gateway.policy import (
    Control,
    Decision,
    EpisodeEnded,
    Event,
    LevelEvent,
    LightStateEvent,
    Nudge,
    Override,
    PolicyState,
    Release,
    StatusEvent,
    Tick,
    TriggerSuppressed,
    initial_state,
    replay,
    state_from_json,
    state_to_json,
    step,
    zone_status,
)

# Friday 2026-11-20 23:30 in Brussels: inside the default night window
NIGHT = dt.datetime(2026, 11, 20, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))).timestamp()


def config(site: dict[str, Any] | None = None, **zone: Any) -> SiteConfig:
    z: dict[str, Any] = {
        "id": "ns",
        "sensors": ["a", "b", "c"],
        "light_groups": ["g1", "g2"],
        "schedule": ["00:00-24:00"],
        "threshold_db": 70.0,
        "hold_s": 120,
        "max_hold_s": 600,
        "cooldown_s": 60,
        "messages": {"en": "People are sleeping here."},
        **zone,
    }
    return parse_config({"site": {"id": "leuven", **(site or {})}, "zones": [z]})


def energy_mean(levels: list[float]) -> float:
    return 10 * math.log10(sum(10 ** (x / 10) for x in levels) / len(levels))


class Sim:
    """Feeds the policy 1 s records and ticks, collecting every decision."""

    def __init__(self, cfg: SiteConfig, now: float = NIGHT, seed: int = 1) -> None:
        self.cfg = cfg
        self.state = initial_state(cfg, seed)
        self.now = now
        self.seq = 0
        self.log: list[Decision] = []

    def send(self, event: Event) -> list[Decision]:
        self.state, out = step(self.cfg, self.state, event, self.now)
        self.log += out
        return out

    def record(
        self,
        sensor: str,
        laeq: float,
        lafmax: float | None = None,
        flags: tuple[str, ...] = (),
        age: float = 0.0,
    ) -> list[Decision]:
        self.seq += 1
        t1 = self.now - age
        return self.send(
            LevelEvent(
                sensor,
                self.seq,
                t1 - 1,
                t1,
                laeq,
                laeq + 5 if lafmax is None else lafmax,
                laeq,
                flags,
                self.now,
            )
        )

    def run(self, seconds: int, levels: dict[str, float]) -> list[Decision]:
        """`seconds` of 1 Hz records at the given levels, with a tick each second."""
        out: list[Decision] = []
        for _ in range(seconds):
            self.now += 1
            for sensor, laeq in levels.items():
                out += self.record(sensor, laeq)
            out += self.send(Tick(self.now))
        return out

    def of(self, kind: type) -> list[Any]:
        return [d for d in self.log if isinstance(d, kind)]


def test_loud_zone_overrides_every_group_and_nudges() -> None:
    cfg = config()
    sim = Sim(cfg)
    out = sim.run(1, {"a": 75.0})
    overrides = [d for d in out if isinstance(d, Override)]
    nudges = [d for d in out if isinstance(d, Nudge)]
    assert [o.group for o in overrides] == ["g1", "g2"]
    assert len(nudges) == 1
    n = nudges[0]
    zone = cfg.zones[0]
    for o in overrides:
        assert o.level == zone.nudge_level
        assert o.expires_at == sim.now + zone.hold_s
        assert o.ramp_s == zone.ramp_s
        assert o.episode == n.nudge_id
        assert o.reason == "noise"
        assert o.evidence == {"a": 75.0}
    assert len({o.cmd_id for o in overrides}) == 2
    assert n.kind == "dim" and n.laeq == 75.0 and dict(n.message) == dict(zone.messages)
    assert n.sensors == ("a", "b", "c")


def test_quiet_zone_does_nothing() -> None:
    sim = Sim(config())
    assert sim.run(30, {"a": 69.9, "b": 60.0, "c": 50.0}) == []


def test_laeq_is_an_energy_mean_over_the_window() -> None:
    # 80 dB and 60 dB: arithmetic mean 70, energy mean ~77; threshold between them
    levels = [80.0, 60.0]
    mean = energy_mean(levels)
    threshold = round((70.0 + mean) / 2, 1)
    assert 70.0 < threshold < mean
    sim = Sim(config(threshold_db=threshold, window_s=10))
    sim.now += 1
    assert sim.record("a", 80.0) != []  # 80 alone is over
    sim = Sim(config(threshold_db=threshold, window_s=10))
    sim.now += 1
    sim.record("a", 60.0)
    sim.now += 1
    out = sim.record("a", 80.0)
    nudge = next(d for d in out if isinstance(d, Nudge))
    assert nudge.evidence["a"] == pytest.approx(mean, abs=0.01)


def test_records_leave_the_window() -> None:
    sim = Sim(config(threshold_db=75.0, window_s=5))
    for laeq in (40.0, 40.0, 40.0, 80.0):  # at t+1 .. t+4
        sim.now += 1
        sim.record("a", laeq)
    assert energy_mean([40.0, 40.0, 40.0, 80.0]) < 75.0
    assert sim.of(Nudge) == []
    # at t+8.5 the window (t+3.5, t+8.5] holds only the 80 and the new 74
    sim.now += 4.5
    sim.record("a", 74.0)
    assert energy_mean([40.0, 40.0, 40.0, 80.0, 74.0]) < 75.0 < energy_mean([80.0, 74.0])
    (nudge,) = sim.of(Nudge)
    assert nudge.evidence["a"] == pytest.approx(energy_mean([80.0, 74.0]), abs=0.01)


def test_min_sensors_must_agree() -> None:
    sim = Sim(config(min_sensors=2))
    assert sim.run(5, {"a": 80.0, "b": 60.0}) == []
    out = sim.run(1, {"a": 80.0, "b": 80.0})
    assert sum(isinstance(d, Nudge) for d in out) == 1
    assert next(d for d in out if isinstance(d, Nudge)).evidence.keys() == {"a", "b"}


def test_peaks_trigger_counts_lafmax_per_sensor() -> None:
    sim = Sim(config(trigger="peaks", peaks_needed=3, window_s=10, threshold_db=70.0))
    for lafmax in (71.0, 50.0, 72.0):
        sim.now += 1
        sim.record("a", 40.0, lafmax=lafmax)
    assert sim.of(Nudge) == []  # two peaks so far
    sim.now += 1
    sim.record("a", 40.0, lafmax=70.0)  # >= threshold counts
    (nudge,) = sim.of(Nudge)
    assert nudge.evidence == {"a": 3.0}
    assert nudge.laeq == pytest.approx(40.0)


@pytest.mark.parametrize("flag", ["calibrating", "unsynced_time"])
def test_flagged_records_never_trigger(flag: str) -> None:
    sim = Sim(config())
    for _ in range(20):
        sim.now += 1
        sim.record("a", 95.0, flags=(flag,))
    assert sim.log == []
    sim.now += 1
    sim.record("a", 95.0, flags=("clipped",))  # clipped is loud, not untrustworthy
    assert len(sim.of(Nudge)) == 1


@pytest.mark.parametrize(("laeq", "lafmax"), [(math.nan, 90.0), (1e308, 90.0), (90.0, math.inf)])
def test_absurd_levels_are_ignored(laeq: float, lafmax: float) -> None:
    sim = Sim(config())
    sim.now += 1
    assert sim.record("a", laeq, lafmax=lafmax) == []
    assert sim.state.zones["ns"].sensors["a"].recent == ()
    assert sim.state.zones["ns"].sensors["a"].last_seen == sim.now  # still alive


def test_late_records_never_trigger() -> None:
    cfg = config(window_s=10)
    sim = Sim(cfg)
    for i in range(30):
        sim.now += 0.1
        sim.record("a", 95.0, age=11.0 + i)  # catch-up after an outage
    assert sim.log == []
    sim.record("a", 95.0, age=9.0)  # recent enough
    assert len(sim.of(Nudge)) == 1


def test_stale_sensor_does_not_count() -> None:
    cfg = config(site={"stale_after_s": 10}, window_s=60, min_sensors=2)
    sim = Sim(cfg)
    sim.now += 1
    sim.record("a", 90.0)
    sim.now += 11  # a's record is still in the 60 s window but a is stale
    sim.record("b", 90.0)
    assert sim.of(Nudge) == []
    sim.record("a", 90.0)  # a is back
    assert len(sim.of(Nudge)) == 1


def test_offline_sensor_never_triggers_until_online() -> None:
    sim = Sim(config())
    sim.send(StatusEvent("a", False, sim.now))
    assert sim.run(20, {"a": 95.0}) == []
    sim.send(StatusEvent("a", True, sim.now))
    assert any(isinstance(d, Nudge) for d in sim.run(1, {"a": 95.0}))


def test_outside_schedule_is_suppressed_once_per_loud_spell() -> None:
    cfg = config(schedule=["mon-sun 23:00-05:00"])
    day = NIGHT - 10 * 3600  # 13:30 local
    sim = Sim(cfg, now=day)
    sim.run(20, {"a": 90.0})
    (sup,) = sim.of(TriggerSuppressed)
    assert sup.why == "outside_schedule"
    assert sim.of(Nudge) == [] and sim.of(Override) == []
    sim.run(20, {"a": 50.0})
    sim.run(5, {"a": 90.0})
    assert len(sim.of(TriggerSuppressed)) == 2


def test_hold_extends_while_noise_continues_and_renews_before_expiry() -> None:
    # window_s = 1: the zone is loud exactly while the records are
    cfg = config(hold_s=120, max_hold_s=600, renew_before_s=30, window_s=1)
    zone = cfg.zones[0]
    sim = Sim(cfg)
    sim.run(1, {"a": 90.0})
    start = sim.now
    sim.run(300, {"a": 90.0})
    renewals = [o for o in sim.of(Override) if o.reason == "renew"]
    assert renewals, "a continuing noise must renew the overrides"
    for o in renewals:
        # sent no earlier than renew_before_s before the previous expiry
        previous = max(p.expires_at for p in sim.of(Override) if p.group == o.group and p.at < o.at)
        assert previous - o.at <= zone.renew_before_s
        assert o.expires_at > previous
        assert o.expires_at <= o.at + zone.hold_s
        assert o.expires_at <= start + zone.max_hold_s
    assert sim.of(Release) == []
    # quiet: released hold_s after the last loud second, not before
    last_loud = sim.now
    sim.run(zone.hold_s - 1, {"a": 40.0})
    assert sim.of(Release) == []
    sim.run(1, {"a": 40.0})
    releases = sim.of(Release)
    assert {r.group for r in releases} == {"g1", "g2"}
    assert all(r.reason == "quiet" and r.at == last_loud + zone.hold_s for r in releases)


def test_max_hold_ends_a_nudge_even_if_noise_continues() -> None:
    cfg = config(hold_s=120, max_hold_s=300, cooldown_s=60)
    sim = Sim(cfg)
    sim.run(1, {"a": 90.0})
    start = sim.now
    sim.run(400, {"a": 90.0})
    first_end = [r for r in sim.of(Release)]
    assert first_end and all(r.reason == "max_hold" for r in first_end[:2])
    assert first_end[0].at == start + 300
    assert all(o.expires_at <= start + 300 for o in sim.of(Override) if o.at < first_end[0].at)
    # cooldown, then a new nudge while it is still loud
    starts = [n.at for n in sim.of(Nudge)]
    assert starts[1] == first_end[0].at + 60


def test_schedule_end_releases() -> None:
    cfg = config(schedule=["mon-sun 23:00-05:00"], hold_s=600, max_hold_s=3600)
    end = dt.datetime(2026, 11, 21, 5, 0, tzinfo=cfg.tz).timestamp()
    sim = Sim(cfg, now=end - 300)
    sim.run(1, {"a": 90.0})
    assert all(o.expires_at <= end for o in sim.of(Override))
    sim.run(400, {"a": 90.0})
    releases = sim.of(Release)
    assert releases and releases[0].reason == "schedule_end" and releases[0].at == end
    assert len(sim.of(Nudge)) == 1  # no nudge after 05:00


def test_all_sensors_silent_releases() -> None:
    cfg = config(site={"stale_after_s": 10}, hold_s=600)
    sim = Sim(cfg)
    sim.run(5, {"a": 90.0, "b": 50.0})
    assert len(sim.of(Nudge)) == 1
    sim.run(20, {})  # nothing arrives
    (r1, _) = sim.of(Release)
    assert r1.reason == "sensors_silent" and r1.at == sim.now - 20 + 11


def test_all_sensors_offline_releases() -> None:
    sim = Sim(config(sensors=["a", "b"]))
    sim.run(3, {"a": 90.0, "b": 90.0})
    sim.send(StatusEvent("a", False, sim.now))
    assert sim.of(Release) == []
    sim.send(StatusEvent("b", False, sim.now))
    assert {r.reason for r in sim.of(Release)} == {"sensors_silent"}


def test_cooldown_after_release() -> None:
    cfg = config(hold_s=30, cooldown_s=200, max_nudges_per_hour=10, window_s=1)
    sim = Sim(cfg)
    sim.run(1, {"a": 90.0})
    sim.run(30, {"a": 40.0})
    (release, _) = sim.of(Release)
    sim.run(10, {"a": 90.0})
    assert [s.why for s in sim.of(TriggerSuppressed)] == ["cooldown"]
    sim.run(200, {"a": 90.0})
    nudges = sim.of(Nudge)
    assert len(nudges) == 2 and nudges[1].at == release.at + 200


def test_hourly_cap_over_a_sliding_hour() -> None:
    cfg = config(hold_s=10, max_hold_s=10, cooldown_s=0, max_nudges_per_hour=3)
    sim = Sim(cfg)
    sim.run(3 * 3600, {"a": 90.0})
    starts = [n.at for n in sim.of(Nudge)]
    assert len(starts) >= 6
    for i, t in enumerate(starts):
        assert sum(1 for u in starts[: i + 1] if t - u < 3600) <= 3
    assert "hourly_cap" in {s.why for s in sim.of(TriggerSuppressed)}
    # the fourth waits for the first to leave the hour
    assert starts[3] == starts[0] + 3600


def test_floor_is_never_crossed() -> None:
    # the config file refuses such a zone; one built in code still cannot cross the floor
    cfg = config(nudge_level=30, floor_level=30)
    cfg = dataclasses.replace(cfg, zones=(dataclasses.replace(cfg.zones[0], nudge_level=5),))
    sim = Sim(cfg)
    sim.run(1, {"a": 90.0})
    assert {o.level for o in sim.of(Override)} == {30.0}


def test_control_periods_send_nothing_but_hold_and_cool_down_the_same() -> None:
    cfg = config(control_fraction=1.0, hold_s=60, cooldown_s=100, window_s=1)
    sim = Sim(cfg)
    sim.run(1, {"a": 90.0})
    (control,) = sim.of(Control)
    assert control.kind == "dim" and control.evidence == {"a": 90.0}
    sim.run(100, {"a": 90.0})  # still one control: the episode holds as a nudge would
    assert len(sim.of(Control)) == 1
    sim.run(60, {"a": 40.0})
    (ended,) = sim.of(EpisodeEnded)
    assert ended.control and ended.reason == "quiet"
    sim.run(99, {"a": 90.0})
    assert len(sim.of(Control)) == 1  # cooldown applies to controls too
    sim.run(1, {"a": 90.0})
    assert len(sim.of(Control)) == 2
    assert sim.of(Override) == [] and sim.of(Nudge) == [] and sim.of(Release) == []


def _draws(cfg: SiteConfig, seed: int, triggers: int) -> list[Nudge | Control]:
    sim = Sim(cfg, seed=seed)
    for _ in range(triggers):
        sim.run(1, {"a": 90.0})
        sim.run(cfg.zones[0].hold_s, {"a": 40.0})
    return [d for d in sim.log if isinstance(d, Nudge | Control)]


def test_control_fraction_and_kinds_are_drawn_evenly_and_reproducibly() -> None:
    cfg = config(
        control_fraction=0.3,
        kinds={"dim": 30, "brighten": 90},
        hold_s=10,
        max_hold_s=10,
        cooldown_s=0,
        max_nudges_per_hour=3600,
    )
    episodes = _draws(cfg, seed=7, triggers=400)
    assert len(episodes) == 400
    controls = sum(isinstance(e, Control) for e in episodes)
    # binomial(400, 0.3): mean 120, sd ~9.2; 4 sd either side
    assert 83 <= controls <= 157
    kinds = Counter(e.kind for e in episodes)
    assert set(kinds) == {"dim", "brighten"} and 160 <= kinds["dim"] <= 240
    # levels follow the kind
    for o in (o for o in _overrides_of(cfg, 7, 20)):
        assert o.level in (30.0, 90.0)
    # same seed, same history: same decisions; another seed: other ids
    assert _draws(cfg, seed=7, triggers=20) == episodes[:20]
    other = _draws(cfg, seed=8, triggers=20)
    assert {_id(e) for e in other}.isdisjoint({_id(e) for e in episodes[:20]})


def _overrides_of(cfg: SiteConfig, seed: int, triggers: int) -> list[Override]:
    sim = Sim(cfg, seed=seed)
    for _ in range(triggers):
        sim.run(1, {"a": 90.0})
        sim.run(cfg.zones[0].hold_s, {"a": 40.0})
    return sim.of(Override)


def _id(d: Nudge | Control) -> str:
    return d.nudge_id if isinstance(d, Nudge) else d.control_id


def test_lights_that_lose_an_applied_override_get_it_again() -> None:
    sim = Sim(config(hold_s=300))
    sim.run(1, {"a": 90.0})
    first = {o.group: o for o in sim.of(Override)}
    # g1 confirms, then reboots into its programme
    sim.send(LightStateEvent("g1", 40.0, first["g1"].cmd_id, "override", sim.now))
    sim.now += 5
    out = sim.send(LightStateEvent("g1", 70.0, None, "programme", sim.now))
    (again,) = [d for d in out if isinstance(d, Override)]
    assert again.reason == "resend" and again.group == "g1"
    assert again.expires_at == first["g1"].expires_at and again.cmd_id != first["g1"].cmd_id
    # g2 never confirmed: a programme report is not a loss, nothing is resent
    out = sim.send(LightStateEvent("g2", 70.0, None, "programme", sim.now))
    assert [d for d in out if isinstance(d, Override)] == []


def test_state_survives_json_and_restart_releases_stale_overrides() -> None:
    cfg = config(hold_s=120)
    sim = Sim(cfg)
    sim.run(10, {"a": 90.0})
    text = state_to_json(sim.state)
    restored = state_from_json(text, cfg)
    assert restored == sim.state
    # the gateway was down for an hour: the first tick releases what was held
    later = sim.now + 3600
    state, out = step(cfg, restored, Tick(later), later)
    assert {d.group for d in out if isinstance(d, Release)} == {"g1", "g2"}
    assert state.zones["ns"].episode is None


def test_restore_adapts_to_config_and_refuses_damage() -> None:
    cfg = config()
    sim = Sim(cfg)
    sim.run(3, {"a": 90.0})
    text = state_to_json(sim.state)
    other = parse_config(
        {
            "site": {"id": "leuven"},
            "zones": [{"id": "new", "sensors": ["x"], "light_groups": ["gx"]}],
        }
    )
    assert set(state_from_json(text, other).zones) == {"new"}
    for bad in ("{", "[]", '{"version": 99}', text.replace('"triggers": 1', '"triggers": "x"')):
        with pytest.raises(StateError):
            state_from_json(bad, cfg)


def test_restore_applies_a_shorter_max_hold() -> None:
    cfg = config(hold_s=120, max_hold_s=600)
    sim = Sim(cfg)
    sim.run(1, {"a": 90.0})
    start = sim.now
    shorter = config(hold_s=120, max_hold_s=200)
    state = state_from_json(state_to_json(sim.state), shorter)
    episode = state.zones["ns"].episode
    assert episode is not None and episode.ends_by == start + 200


def test_zone_status_view() -> None:
    cfg = config()
    sim = Sim(cfg)
    sim.run(2, {"a": 90.0, "b": 50.0})
    view = zone_status(cfg, sim.state, "ns", sim.now)
    assert json.loads(json.dumps(view)) == json.loads(json.dumps(view, default=str))
    assert view["live_sensors"] == ["a", "b"] and view["loud"] is True
    assert view["episode"]["id"] == sim.of(Nudge)[0].nudge_id
    assert view["nudges_last_hour"] == 1


def test_a_sensor_shared_by_two_zones_counts_in_each_by_its_rules() -> None:
    cfg = parse_config(
        {
            "site": {"id": "leuven"},
            "zones": [
                {
                    "id": "street",
                    "sensors": ["corner", "s1"],
                    "light_groups": ["gs"],
                    "schedule": "00:00-24:00",
                    "threshold_db": 70.0,
                },
                {
                    "id": "square",
                    "sensors": ["corner", "q1"],
                    "light_groups": ["gq"],
                    "schedule": "00:00-24:00",
                    "threshold_db": 80.0,
                },
            ],
        }
    )
    sim = Sim(cfg)
    sim.run(3, {"corner": 75.0})
    assert [n.zone for n in sim.of(Nudge)] == ["street"]
    assert {o.group for o in sim.of(Override)} == {"gs"}
    sim.run(1, {"corner": 85.0})
    assert [n.zone for n in sim.of(Nudge)] == ["street", "square"]


def test_replay_gives_the_decisions_of_the_live_run() -> None:
    cfg = config(control_fraction=0.5, hold_s=30, cooldown_s=0, max_nudges_per_hour=20)
    sim = Sim(cfg, seed=1)
    events: list[tuple[float, Event]] = []
    original = sim.send

    def recording(event: Event) -> list[Decision]:
        events.append((sim.now, event))
        return original(event)

    sim.send = recording  # type: ignore[method-assign]
    for i in range(600):
        sim.run(1, {"a": 90.0 if (i // 50) % 2 == 0 else 40.0, "b": 60.0})
    state, decisions = replay(cfg, events, seed=1)
    assert decisions == sim.log and state == sim.state
    assert sim.of(Nudge) and sim.of(Control)


def test_unknown_sensor_and_group_change_nothing() -> None:
    cfg = config()
    state = initial_state(cfg)
    ev = LevelEvent("zz", 1, NIGHT - 1, NIGHT, 99.0, 99.0, 99.0, (), NIGHT)
    assert step(cfg, state, ev, NIGHT) == (state, [])
    assert step(cfg, state, LightStateEvent("gz", 1.0, None, "programme", NIGHT), NIGHT) == (
        state,
        [],
    )


# ------------------------------------------------------------ property tests


class Model:
    """An independent reading of the rules, checked against every step's decisions."""

    def __init__(self, cfg: SiteConfig) -> None:
        self.cfg = cfg
        self.zone = cfg.zones[0]
        self.online = dict.fromkeys(self.zone.sensors, True)
        self.last_seen: dict[str, float] = {}
        self.records: dict[str, list[tuple[float, float, float, float]]] = {
            s: [] for s in self.zone.sensors
        }
        self.episode: dict[str, Any] | None = None
        self.starts: list[float] = []
        self.last_end = -math.inf
        self.expiry: dict[str, float] = {}

    def live(self, s: str, now: float) -> bool:
        seen = self.last_seen.get(s)
        return self.online[s] and seen is not None and now - seen <= self.cfg.stale_after_s

    def qualifying(self, now: float) -> dict[str, float]:
        z = self.zone
        out = {}
        for s in z.sensors:
            recs = [r for r in self.records[s] if now - z.window_s < r[1] <= now + z.window_s]
            if not self.live(s, now) or not recs:
                continue
            if z.trigger == "laeq":
                weights = [max(r[1] - r[0], 0) or 1.0 for r in recs]
                e = sum(w * 10 ** (r[2] / 10) for w, r in zip(weights, recs, strict=True))
                value = 10 * math.log10(e / sum(weights))
                if value >= z.threshold_db:
                    out[s] = value
            else:
                peaks = sum(1 for r in recs if r[3] >= z.threshold_db)
                if peaks >= z.peaks_needed:
                    out[s] = float(peaks)
        return out

    def observe(self, ev: Event, now: float) -> None:
        z = self.zone
        if isinstance(ev, LevelEvent) and ev.sensor in self.online:
            self.last_seen[ev.sensor] = max(
                self.last_seen.get(ev.sensor, -math.inf), ev.received_at
            )
            kept = [r for r in self.records[ev.sensor] if r[1] > now - z.window_s]
            if (
                self.online[ev.sensor]
                and not {"calibrating", "unsynced_time"} & set(ev.flags)
                and now - z.window_s < ev.t1 <= now + z.window_s
                and all(r[1] != ev.t1 for r in kept)
            ):
                kept.append((ev.t0, ev.t1, ev.laeq, ev.lafmax))
            self.records[ev.sensor] = kept
        elif isinstance(ev, StatusEvent) and ev.sensor in self.online:
            self.online[ev.sensor] = ev.online
            if not ev.online:
                self.records[ev.sensor] = []


# A history is a list of segments: after a gap, some sensors send 1 Hz records
# for a while (the clock ticks each second), with a status or light report first.
_segment = st.tuples(
    st.one_of(st.just(0.0), st.floats(0.0, 60.0), st.floats(0.0, 400.0), st.floats(0, 4000.0)),
    st.integers(1, 150),  # seconds of records
    st.sampled_from(  # x belongs to no zone
        [("a", "b", "c"), ("a", "b", "c"), ("a", "b"), ("a",), ("b", "c", "x"), ("x",), ()]
    ),
    st.one_of(st.floats(40.0, 100.0), st.floats(70.0, 95.0)).map(lambda x: round(x, 1)),  # LAeq
    st.floats(0.0, 20.0),  # LAFmax above LAeq
    st.sampled_from([(), (), (), ("calibrating",), ("unsynced_time",), ("clipped",)]),
    st.one_of(st.just(0.0), st.just(0.0), st.floats(0.0, 120.0)),  # age of the records
    st.sampled_from([None, None, "status", "light"]),
    st.sampled_from(["a", "b", "c"]),
    st.booleans(),
)
_zone = st.fixed_dictionaries(
    {
        "schedule": st.sampled_from(
            [["mon-sun 23:00-05:00"], ["00:00-24:00"], ["fri,sat 22:00-06:00", "sun 01:00-03:00"]]
        ),
        "trigger": st.sampled_from(["laeq", "peaks"]),
        "window_s": st.sampled_from([5, 10, 60]),
        "min_sensors": st.integers(1, 3),
        "hold_s": st.sampled_from([30, 120]),
        "max_hold_s": st.sampled_from([120, 300]),
        "cooldown_s": st.sampled_from([0, 60, 300]),
        "max_nudges_per_hour": st.integers(1, 4),
        "control_fraction": st.sampled_from([0.0, 0.5]),
        "nudge_level": st.integers(0, 100),
        "floor_level": st.integers(0, 100),
    }
)


def _local(day: int, hhmm: tuple[int, int]) -> int:
    """Epoch s of a local time in Brussels on the `day`-th day of 2026."""
    date = dt.date(2026, 1, 1) + dt.timedelta(days=day)
    when = dt.datetime.combine(date, dt.time(*hhmm), tzinfo=ZoneInfo("Europe/Brussels"))
    return int(when.timestamp())


_start = st.one_of(
    st.integers(1_767_225_600, 1_798_761_600),  # any time in 2026
    st.builds(_local, st.integers(0, 364), st.sampled_from([(22, 30), (4, 50), (5, 58)])),
    st.sampled_from([1_774_740_000, 1_792_886_400]).flatmap(  # near the 2026 DST nights
        lambda t: st.integers(t - 4 * 3600, t + 4 * 3600)
    ),
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    zone=_zone,
    stale=st.sampled_from([10, 30]),
    start=_start,
    segments=st.lists(_segment, min_size=1, max_size=10),
    seed=st.integers(0, 2**32),
)
def test_policy_properties(
    zone: dict[str, Any], stale: int, start: int, segments: list[Any], seed: int
) -> None:
    if zone["trigger"] == "peaks":
        zone["peaks_needed"] = 2
    zone["max_hold_s"] = max(zone["max_hold_s"], zone["hold_s"])
    zone["nudge_level"] = max(zone["nudge_level"], zone["floor_level"])  # or it is refused
    cfg = config(site={"stale_after_s": stale}, **zone)
    z = cfg.zones[0]
    model = Model(cfg)
    state = initial_state(cfg, seed)
    now = float(start)
    last_fire = -math.inf
    seq = 0

    def apply(ev: Event) -> None:
        nonlocal state, last_fire
        was = model.episode
        state, out = step(cfg, state, ev, now)
        model.observe(ev, now)
        _check_step(cfg, model, ev, now, out, was, last_fire)
        if (
            isinstance(ev, LevelEvent)
            and ev.sensor in z.sensors
            and len(model.qualifying(now)) >= z.min_sensors
        ):
            last_fire = now
        if model.episode is not None:
            model.episode["last_fire"] = max(model.episode["last_fire"], last_fire)

    for gap, seconds, sensors, laeq, extra, flags, age, other, who, flag in segments:
        now += gap
        if other == "status":
            apply(StatusEvent(who, flag, now))
        elif other == "light":
            group = "g1" if flag else "g2"
            cmd = model.episode["cmds"].get(group) if model.episode else None
            source = "override" if flag else "programme"
            apply(LightStateEvent(group, laeq, cmd if flag else None, source, now))
        for _ in range(seconds):
            now += 1.0
            for sensor in sensors:
                seq += 1
                t1 = now - age
                apply(LevelEvent(sensor, seq, t1 - 1, t1, laeq, laeq + extra, laeq, flags, now))
            apply(Tick(now))
        assert state_from_json(state_to_json(state), cfg) == state
    # whatever happened, the policy lets go by itself
    end = now + z.max_hold_s + 1
    state, out = step(cfg, state, Tick(end), end)
    assert state.zones["ns"].episode is None
    if model.episode is not None and not model.episode["control"]:
        assert {r.group for r in out if isinstance(r, Release)} == set(z.light_groups)


def _check_step(
    cfg: SiteConfig,
    model: Model,
    ev: Event,
    now: float,
    out: list[Decision],
    was: dict[str, Any] | None,
    last_fire: float,
) -> None:
    z = model.zone
    # ends first: the policy ends an episode before it looks at the new record
    for d in out:
        if isinstance(d, EpisodeEnded):
            assert model.episode is not None and d.episode == model.episode["id"]
            if d.reason == "quiet":
                assert now - model.episode["last_fire"] >= z.hold_s
            if d.reason == "sensors_silent":
                assert not any(model.live(s, now) for s in z.sensors)
            if d.reason == "max_hold":
                assert now >= model.episode["start"] + z.max_hold_s
            model.episode = None
            model.last_end = now
        elif isinstance(d, Release):
            assert model.episode is not None and d.group in model.episode["cmds"]
            assert d.episode == model.episode["id"]
    for d in out:
        if isinstance(d, Nudge | Control):
            assert model.episode is None, "one episode at a time"
            assert z.schedule.is_active(now, cfg.tz), "no nudge outside the schedule"
            assert now - model.last_end >= z.cooldown_s, "cooldown respected"
            recent = [t for t in model.starts if now - t < 3600]
            assert len(recent) < z.max_nudges_per_hour, "hourly cap respected"
            expected = model.qualifying(now)
            assert len(expected) >= z.min_sensors
            assert d.evidence.keys() == expected.keys(), "stale/offline sensors never trigger"
            for s, v in d.evidence.items():
                assert v == pytest.approx(expected[s], abs=0.01)
            model.starts.append(now)
            period = z.schedule.active_period(now, cfg.tz)
            assert period is not None
            model.episode = {
                "id": d.nudge_id if isinstance(d, Nudge) else d.control_id,
                "control": isinstance(d, Control),
                "start": now,
                "last_fire": now,
                "cmds": {},
                "period_end": period[1],
            }
    for d in out:
        if isinstance(d, Override):
            assert model.episode is not None and not model.episode["control"]
            assert d.level >= z.floor_level, "never below the floor"
            assert now < d.expires_at <= now + z.max_hold_s
            assert d.expires_at <= model.episode["start"] + z.max_hold_s
            period = z.schedule.active_period(now, cfg.tz)
            assert period is not None and d.expires_at <= period[1]
            model.episode["cmds"][d.group] = d.cmd_id
            model.expiry[d.group] = d.expires_at
    # a trigger that may start an episode does
    if (
        isinstance(ev, LevelEvent)
        and ev.sensor in z.sensors
        and was is None
        and model.episode is None
    ):
        fires = len(model.qualifying(now)) >= z.min_sensors
        allowed = (
            z.schedule.is_active(now, cfg.tz)
            and now - model.last_end >= z.cooldown_s
            and sum(1 for t in model.starts if now - t < 3600) < z.max_nudges_per_hour
        )
        assert not (fires and allowed), "a due trigger must start an episode"
    if isinstance(ev, Tick) and model.episode is not None:
        ep = model.episode
        assert z.schedule.is_active(now, cfg.tz), "the schedule's end ends the episode"
        assert any(model.live(s, now) for s in z.sensors), "all silent releases"
        assert now < ep["start"] + z.max_hold_s
        assert now - max(ep["last_fire"], last_fire) < z.hold_s
        if not ep["control"]:
            want = min(
                max(ep["last_fire"], last_fire) + z.hold_s,
                ep["start"] + z.max_hold_s,
                ep["period_end"],
            )
            for g in z.light_groups:
                exp = model.expiry[g]
                assert exp >= want - 1e-6 or exp - now > z.renew_before_s, "renewed before expiry"


def test_property_model_is_not_vacuous() -> None:
    """The random histories above do reach nudges, renewals, controls and every release."""
    cfg = config(control_fraction=0.5, hold_s=30, max_hold_s=120, cooldown_s=0)
    sim = Sim(cfg)
    for i in range(2000):
        sim.run(1, {"a": 90.0 if (i // 200) % 2 == 0 else 40.0})
    reasons = {r.reason for r in sim.of(Release)} | {e.reason for e in sim.of(EpisodeEnded)}
    assert {"quiet", "max_hold"} <= reasons
    assert sim.of(Control) and sim.of(Nudge)
    assert any(o.reason == "renew" for o in sim.of(Override))


def test_state_is_not_mutated_by_step() -> None:
    cfg = config()
    state = initial_state(cfg)
    before = state_to_json(state)
    ev = LevelEvent("a", 1, NIGHT - 1, NIGHT, 90.0, 95.0, 90.0, (), NIGHT)
    new, out = step(cfg, state, ev, NIGHT)
    assert out and state_to_json(state) == before and new != state
    assert isinstance(new, PolicyState)
    assert dataclasses.is_dataclass(new)


def test_the_hold_extension_shortcut_is_dataclasses_replace() -> None:
    """`_still_loud` builds the episode and zone field by field (it runs per record): it
    must stay what `dataclasses.replace` gives, whatever fields the two classes get."""
    from gateway import policy

    ep = policy.Episode(
        id="z-1-abc",
        control=True,
        kind="dim",
        level=35.0,
        started=1.0,
        last_loud=2.0,
        ends_by=3.0,
        overrides=(policy.SentOverride("g1", "z-1-abc.1", 35.0, 9.0, True),),
        commands=4,
        resends=1,
        evidence={"s1": 71.5},
    )
    zs = policy.ZoneState(
        sensors={"s1": policy.SensorWindow(last_seen=1.0)},
        episode=ep,
        triggers=5,
        starts=(1.0,),
        cooldown_until=7.0,
        loud=True,
        suppressed="cooldown",
    )
    for obj in (ep, zs):
        for f in dataclasses.fields(obj):
            unset = (
                f.default
                if f.default is not dataclasses.MISSING
                else f.default_factory()
                if f.default_factory is not dataclasses.MISSING
                else object()
            )
            assert getattr(obj, f.name) != unset, f"give {f.name} a value here"
    expected = dataclasses.replace(zs, episode=dataclasses.replace(ep, last_loud=8.0))
    assert policy._still_loud(zs, ep, 8.0) == expected
