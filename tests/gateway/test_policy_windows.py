"""The policy's per-sensor windows: the sums kept with them always equal a from-scratch sum.

The policy keeps each window's energy, seconds and peak count next to its
records so that looking at a zone costs no pass over them; these tests feed
it random histories (out of order, repeated times, late, flagged, offline
spells, silence) and recompute everything from the records themselves.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import SiteConfig, parse_config
from gateway.policy import (
    LevelEvent,
    PolicyState,
    StatusEvent,
    Tick,
    initial_state,
    state_from_json,
    state_json_parts,
    state_to_json,
    step,
)

WINDOW_S = 10.0
THRESHOLD = 70.0


def site(trigger: str) -> SiteConfig:
    zone: dict[str, Any] = {
        "id": "ns",
        "sensors": ["a", "b", "c"],
        "light_groups": ["g1"],
        "schedule": ["00:00-24:00"],
        "threshold_db": THRESHOLD,
        "window_s": int(WINDOW_S),
        "trigger": trigger,
        "messages": {"en": "Quiet, please."},
    }
    return parse_config({"site": {"id": "w", "stale_after_s": 15}, "zones": [zone]})


_event = st.one_of(
    st.tuples(
        st.just("level"),
        st.sampled_from("abc"),
        st.sampled_from([0.0, 0.0, 0.3, 1.0, 5.0, 9.99, 10.0, 14.0, -2.0]),  # age of t1
        st.sampled_from([1.0, 0.0, 2.5]),  # duration
        st.one_of(st.floats(30.0, 110.0), st.sampled_from([69.99, 70.0, 250.0])),  # LAeq
        st.sampled_from([60.0, 70.0, 85.0]),  # LAFmax
        st.sampled_from([(), (), ("calibrating",), ("clipped",)]),
    ),
    st.tuples(st.just("status"), st.sampled_from("abc"), st.booleans()),
    st.tuples(st.just("tick")),
)
_history = st.lists(
    st.tuples(st.sampled_from([0.0, 0.2, 1.0, 1.0, 3.0, 12.0]), _event), max_size=120
)


def check_windows(state: PolicyState, now: float) -> None:
    for zone in state.zones.values():
        for w in zone.sensors.values():
            times = [r[0] for r in w.recent]
            assert times == sorted(set(times)), "records oldest first, one per end time"
            # an independent sum, oldest first like the policy, so equal to the last bit
            energy = seconds = 0.0
            peaks = 0
            for _, d, e, lafmax in w.recent:
                energy += e
                seconds += d
                peaks += lafmax >= THRESHOLD
            assert (w.energy, w.seconds, w.peaks) == (energy, seconds, peaks)
            for t1, d, e, _ in w.recent:
                assert t1 <= now + WINDOW_S
                laeq = 10 * math.log10(e / d)
                assert -50.0 <= laeq <= 200.0 + 1e-9


@settings(max_examples=150, deadline=None)
@given(trigger=st.sampled_from(["laeq", "peaks"]), history=_history)
def test_window_sums_equal_a_sum_of_the_records(trigger: str, history: list[Any]) -> None:
    config = site(trigger)
    state = initial_state(config)
    now = 1_800_000_000.0
    for seq, (dt, ev) in enumerate(history):
        now += dt
        event: LevelEvent | StatusEvent | Tick
        if ev[0] == "level":
            _, sensor, age, dur, laeq, lafmax, flags = ev
            t1 = now - age
            event = LevelEvent(sensor, seq, t1 - dur, t1, laeq, lafmax, 60.0, flags, now)
        elif ev[0] == "status":
            event = StatusEvent(ev[1], ev[2], now)
        else:
            event = Tick(now)
        state, _ = step(config, state, event, now)
        check_windows(state, now)


@settings(max_examples=100, deadline=None)
@given(history=_history)
def test_evidence_is_the_energy_mean_of_the_records_inside_the_window(history: list[Any]) -> None:
    # every nudge's evidence, recomputed from the window records of the state before it
    config = site("laeq")
    state = initial_state(config)
    now = 1_800_000_000.0
    for seq, (dt, ev) in enumerate(history):
        now += dt
        if ev[0] != "level":
            continue
        _, sensor, age, dur, laeq, lafmax, flags = ev
        t1 = now - age
        event = LevelEvent(sensor, seq, t1 - dur, t1, laeq, lafmax, 60.0, flags, now)
        state, decisions = step(config, state, event, now)
        for d in decisions:
            evidence = getattr(d, "evidence", None)
            if not evidence or getattr(d, "reason", "noise") != "noise":
                continue
            zs = state.zones["ns"]
            for s, value in evidence.items():
                inside = [
                    r for r in zs.sensors[s].recent if now - WINDOW_S < r[0] <= now + WINDOW_S
                ]
                mean = 10 * math.log10(sum(r[2] for r in inside) / sum(r[1] for r in inside))
                assert value == round(mean, 2) or abs(value - mean) < 1e-6
                assert value >= THRESHOLD


@settings(max_examples=60, deadline=None)
@given(history=_history, windows=st.booleans())
def test_saved_state_is_canonical_json_of_every_zone(history: list[Any], windows: bool) -> None:
    # pieces joined = `json.dumps(..., sort_keys=True)` of the whole state, zones in any order
    zones = [
        {
            "id": zid,
            "sensors": list(sensors),
            "light_groups": [f"{zid}-g"],
            "schedule": ["00:00-24:00"],
        }
        for zid, sensors in (("zb", "ab"), ("za", "bc"), ("z-c", "c"))
    ]
    config = parse_config({"site": {"id": "w"}, "zones": zones})
    state = initial_state(config, seed=7)
    now = 1_800_000_000.0
    for seq, (dt, ev) in enumerate(history):
        now += dt
        if ev[0] == "level":
            _, sensor, age, dur, laeq, lafmax, flags = ev
            t1 = now - age
            event = LevelEvent(sensor, seq, t1 - dur, t1, laeq, lafmax, 60.0, flags, now)
            state, _ = step(config, state, event, now)
    text = "".join(state_json_parts(state, windows=windows))
    assert text == state_to_json(state, windows=windows)
    parsed = json.loads(text)
    assert text == json.dumps(parsed, sort_keys=True)
    assert sorted(parsed["zones"]) == ["z-c", "za", "zb"] and parsed["seed"] == 7
    assert state_from_json(text, config).zones.keys() == state.zones.keys()
