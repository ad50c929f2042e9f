"""The demo's scripted night: geometry, levels and spectra checked from first principles."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from dsp import reference, wavfile
from gateway import policy
from tools import demo, scenes

RATE = 8000  # the checks hold at any rate; a lower one keeps the test fast
SECONDS = 195.0  # quiet, the group, quiet, the music: enough for every check here
FloatArray = npt.NDArray[np.float64]


@pytest.fixture(scope="module")
def street() -> list[FloatArray]:
    made = scenes.sources(RATE, SECONDS)
    return [scenes.night(i, RATE, SECONDS, made=made) for i in range(len(scenes.SENSORS))]


def _spl(x: FloatArray) -> float:
    """Unweighted SPL of samples (0 dBFS sine = 120 dB SPL, so SPL = 120 + 10 log10(2 ms))."""
    return 120.0 + 10 * math.log10(2 * float(np.mean(x**2)))


def _span(x: FloatArray, t0: float, t1: float) -> FloatArray:
    return x[int(t0 * RATE) : int(t1 * RATE)]


def _weighted_spl(x: FloatArray, curve: str) -> float:
    """SPL through the IEC 61672-1:2013 Annex E analytic A or C weighting, in the spectrum."""
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    f2 = f**2
    # Annex E, equations E.1-E.6: pole frequencies of the weightings
    f1, f4 = 20.598997, 12194.217
    f2p, f3 = 107.65265, 737.86223
    c = f4**2 * f2 / ((f2 + f1**2) * (f2 + f4**2))
    if curve == "C":
        gain = c / (f4**2 * 1000.0**2 / ((1000.0**2 + f1**2) * (1000.0**2 + f4**2)))
    else:
        a = c * f2 / np.sqrt((f2 + f2p**2) * (f2 + f3**2))
        k = 1000.0**2
        a1k = (f4**2 * k / ((k + f1**2) * (k + f4**2))) * k / math.sqrt((k + f2p**2) * (k + f3**2))
        gain = a / a1k
    weighted = float(np.sum(spectrum * gain**2)) / float(np.sum(spectrum))
    return _spl(x) + 10 * math.log10(weighted)


def test_deterministic(street: list[FloatArray]) -> None:
    for event in scenes.SCRIPT:
        assert np.array_equal(
            event.make(RATE, RATE, event.seed), event.make(RATE, RATE, event.seed)
        )
    assert np.array_equal(scenes.night(3, RATE, 20.0), scenes.night(3, RATE, 20.0))


def test_quiet_street_background(street: list[FloatArray]) -> None:
    for x in street:
        # pink noise carries much of its power in slow low-frequency swings
        assert abs(_spl(_span(x, 1, 29)) - scenes.BACKGROUND_SPL) < 0.5


def test_group_passes_the_sensors_in_order(street: list[FloatArray]) -> None:
    group = scenes.SCRIPT[0]
    speed = (group.x1_m - group.x0_m) / (group.stop_s - group.start_s)
    for number, x in enumerate(street):
        # closest approach: the source is abreast of the lamp post, plus the
        # lateral distance's travel time
        expected = group.start_s + (scenes.position(number) - group.x0_m) / speed
        expected += group.lateral_m / scenes.SPEED_OF_SOUND
        power = np.cumsum(_span(x, group.start_s, group.stop_s) ** 2)
        window = power[4 * RATE :] - power[: -4 * RATE]  # energy of each 4 s window
        loudest = group.start_s + (int(np.argmax(window)) + 2 * RATE) / RATE
        # voices come in bursts, so the loudest 4 s window sits near, not at, the pass
        assert abs(loudest - expected) < 5.0, (scenes.SENSORS[number], loudest, expected)


def test_spreading_loss_from_the_window(street: list[FloatArray]) -> None:
    music = scenes.SCRIPT[1]
    near, far = 2, 4  # ns-03 and ns-05
    d_near = math.hypot(scenes.position(near) - music.x0_m, music.lateral_m)
    d_far = math.hypot(scenes.position(far) - music.x0_m, music.lateral_m)
    expected = 20 * math.log10(d_far / d_near)
    measured = _spl(_span(street[near], 130, 180)) - _spl(_span(street[far], 130, 180))
    assert abs(measured - expected) < 0.3
    assert abs(_spl(_span(street[near], 130, 180)) - (music.spl_1m - 20 * math.log10(d_near))) < 0.3


def test_music_is_bass_heavy_voices_are_not(street: list[FloatArray]) -> None:
    music = _span(street[2], 130, 180)
    assert _weighted_spl(music, "C") - _weighted_spl(music, "A") > 10.0
    voices = _span(street[3], 55, 75)
    assert abs(_weighted_spl(voices, "C") - _weighted_spl(voices, "A")) < 3.0
    # the Leuven pilot's 70 dB(A) is crossed when the group passes ns-04 (at 60 s)
    assert _weighted_spl(_span(street[3], 58, 62), "A") > 70.0


def test_write_night(tmp_path: Path) -> None:
    paths = scenes.write_night(tmp_path, scenes.RATE, seconds=2.0)
    assert sorted(paths) == list(scenes.SENSORS)
    rate, x = wavfile.read(paths["ns-04"])
    assert rate == scenes.RATE and len(x) == 2 * scenes.RATE
    assert abs(_spl(x) - scenes.BACKGROUND_SPL) < 1.0


def test_happening() -> None:
    assert scenes.happening(0.0) == scenes.QUIET
    assert scenes.happening(45.0) == scenes.SCRIPT[0].name
    assert scenes.happening(250.0) == scenes.QUIET
    with pytest.raises(ValueError, match="sensor number 7"):
        scenes.night(7, RATE, 1.0)


@pytest.fixture(scope="module")
def night_levels() -> dict[str, list[reference.Interval]]:
    """Each sensor's 1 s records of the whole night, from the float reference meter."""
    made = scenes.sources(scenes.RATE, scenes.SECONDS)
    return {
        sensor: reference.measure(
            scenes.RATE, scenes.night(number, scenes.RATE, scenes.SECONDS, made=made)
        )
        for number, sensor in enumerate(scenes.SENSORS)
    }


def test_demo_zones_answer_the_group_and_neither_the_music_nor_the_car(
    night_levels: dict[str, list[reference.Interval]],
) -> None:
    """The gateway's own policy, on the demo's config, over the night's levels.

    The shouting group must draw a nudge in each zone; the music (bass that
    A-weighting discounts) and the single passing car (loud, but for a second
    or two at each lamp post) must draw none.
    """
    config = demo.site_config()
    origin = demo.NIGHT.timestamp()
    events: list[tuple[float, policy.Event]] = [
        (origin, policy.StatusEvent(s, True, origin)) for s in scenes.SENSORS
    ]
    records = sorted(
        (origin + iv.t1, sensor, seq, iv)
        for sensor, ivs in night_levels.items()
        for seq, iv in enumerate(ivs)
    )
    for at, sensor, seq, iv in records:
        event = policy.LevelEvent(
            sensor,
            seq,
            origin + iv.t0,
            at,
            round(iv.laeq, 2),
            round(iv.lafmax, 2),
            round(iv.lceq, 2),
        )
        events.append((at, event))
    _, decisions = policy.replay(config, events)
    nudges = [d for d in decisions if isinstance(d, policy.Nudge)]
    by_scene = sorted((scenes.happening(n.at - origin), n.zone) for n in nudges)
    group = scenes.SCRIPT[0].name
    assert by_scene == [(group, "collegeberg"), (group, "stuk")], by_scene
