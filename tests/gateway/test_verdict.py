"""gateway.verdict: the effect of nudges against controls, checked on simulated nights."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import replace
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from gateway.verdict import MIN_PER_ARM, Minute, measures, verdicts
from tools.pilot import simulate

TZ = ZoneInfo("Europe/Brussels")


def test_measures_by_hand() -> None:
    minutes = [
        Minute("a", 0.0, 60.0, 60.0, 3),
        Minute("a", 60.0, 30.0, 70.0, 1),
        Minute("b", 0.0, 60.0, 50.0, 0),
    ]
    laeq, peaks = measures(minutes) or (0.0, 0.0)
    energy = 60 * 1e6 + 30 * 1e7 + 60 * 1e5
    assert laeq == pytest.approx(10 * math.log10(energy / 150.0))
    assert peaks == 2.0  # 4 peaks over 2 sensors
    assert measures([]) is None
    assert measures([Minute("a", 0.0, 0.0, 60.0, 0)]) is None


def test_coverage_on_simulated_nights(capsys: pytest.CaptureFixture[str]) -> None:
    """The 95 % intervals cover the truth in about 95 of 100 simulated pilots."""
    truth_ratio, truth_db = 0.7, -1.5
    seeds = range(100)
    cover = {"peaks effect": 0, "laeq effect": 0, "peaks null": 0, "laeq null": 0}
    detected = {"peaks": 0, "laeq": 0}
    null_p = []
    sizes = []
    for seed in seeds:
        eff = verdicts(simulate(seed, rate_ratio=truth_ratio, shift_db=truth_db), seed=seed)[0]
        null = verdicts(simulate(1000 + seed), seed=seed)[0]
        assert eff.peaks and eff.laeq and null.peaks and null.laeq
        sizes.append(eff.nudges_analysed + eff.controls_analysed)
        cover["peaks effect"] += _covers(eff.peaks.low, eff.peaks.high, truth_ratio)
        cover["laeq effect"] += _covers(eff.laeq.low, eff.laeq.high, truth_db)
        cover["peaks null"] += _covers(null.peaks.low, null.peaks.high, 1.0)
        cover["laeq null"] += _covers(null.laeq.low, null.laeq.high, 0.0)
        detected["peaks"] += (eff.peaks.p_value or 1.0) < 0.05
        detected["laeq"] += (eff.laeq.p_value or 1.0) < 0.05
        null_p += [null.peaks.p_value or 1.0, null.laeq.p_value or 1.0]
    with capsys.disabled():
        print(
            f"\nverdict on {len(seeds)} simulated pilots of 30 nights "
            f"({min(sizes)}-{max(sizes)} episodes each, half controls): "
            f"95 % intervals covering the truth: {cover}; "
            f"effects detected at p < 0.05: {detected} of {len(seeds)}; "
            f"null p-values < 0.05: {sum(p < 0.05 for p in null_p)} of {len(null_p)}"
        )
    # 95 of 100 expected; below 88 has probability < 1 % if the true coverage is 95 %
    for what, n in cover.items():
        assert n >= 88, f"{what}: {n} of 100 intervals cover the truth"
    # and not vacuous: the intervals are narrow enough to see the injected effect
    assert detected["peaks"] >= 60 and detected["laeq"] >= 60


def _covers(low: float | None, high: float | None, truth: float) -> bool:
    return (low is None or low <= truth) and (high is None or truth <= high)


def test_deterministic_and_stratified() -> None:
    eps = simulate(3, rate_ratio=0.6) + simulate(4, zone="om", kind="brighten")
    first, again = verdicts(eps), verdicts(list(reversed(eps)))
    assert first == again
    assert [(v.zone, v.kind) for v in first] == [("ns", "dim"), ("om", "brighten")]
    ns = first[0]
    alone = verdicts(simulate(3, rate_ratio=0.6))[0]
    # another zone's episodes change nothing in this one's verdict
    assert ns == alone
    assert ns.nudges + ns.controls == len(simulate(3, rate_ratio=0.6))
    assert verdicts(eps, seed=1)[0].peaks != ns.peaks  # the seed drives the permutations


def test_interval_contains_the_estimate_and_figures_agree() -> None:
    v = verdicts(simulate(7, rate_ratio=0.5, shift_db=-2.0))[0]
    assert v.peaks and v.laeq and v.balance
    for e in (v.peaks, v.laeq):
        assert e.low is not None and e.high is not None and e.estimate is not None
        assert e.low <= e.estimate <= e.high
    assert v.peaks.estimate == pytest.approx(v.peaks.mean_nudges / v.peaks.mean_controls)
    assert v.laeq.estimate == pytest.approx(v.laeq.mean_nudges - v.laeq.mean_controls)
    assert v.peaks.high is not None and v.peaks.high < 1.0 and (v.peaks.p_value or 1) < 0.05
    assert v.balance.ok


def test_adjustment_removes_regression_to_the_mean() -> None:
    """Controls chosen after louder minutes look worse after, unadjusted; adjusted, they do not."""
    eps = simulate(11, nights=40)
    # relabel: the loudest half before the trigger become the controls, as a biased design would
    loud = sorted(eps, key=lambda e: -(measures(e.before) or (0.0, 0.0))[0])
    controls = {e.id for e in loud[: len(eps) // 2]}
    biased = [replace(e, control=e.id in controls) for e in eps]
    v = verdicts(biased)[0]
    assert v.laeq and v.balance and v.laeq.low is not None and v.laeq.high is not None
    after = {
        c: np.mean([(measures(e.after) or (0.0, 0.0))[0] for e in biased if e.control == c])
        for c in (False, True)
    }
    raw = after[False] - after[True]
    assert raw < -2.0  # the naive difference shows a large "effect" that is not there
    assert v.laeq.low <= 0.0 <= v.laeq.high  # the adjusted one covers no change
    assert not v.balance.ok and v.balance.p_laeq_before < 0.01  # and the check flags the labels


def test_balance_flags_controls_at_other_hours() -> None:
    eps = simulate(5)
    hour = {e.id: (dt.datetime.fromtimestamp(e.at, TZ).hour + 12) % 24 for e in eps}
    relabelled = [replace(e, control=hour[e.id] >= 14) for e in eps]  # controls after 02:00
    b = verdicts(relabelled)[0].balance
    assert b is not None and not b.ok and b.p_hours < 0.01
    assert b.hour_controls > 2.0 and b.hour_nudges < 2.0
    fair = verdicts(eps)[0].balance
    assert fair is not None and fair.ok


def test_not_enough_data() -> None:
    eps = simulate(2, nights=3)
    v = verdicts(eps)[0]
    assert min(v.nudges_analysed, v.controls_analysed) < MIN_PER_ARM
    assert v.peaks is None and v.laeq is None and v.balance is None
    assert v.more_needed >= MIN_PER_ARM - min(v.nudges_analysed, v.controls_analysed)
    # no controls at all: the count asks for both arms
    only_nudges = verdicts([replace(e, control=False) for e in eps])[0]
    assert only_nudges.controls == 0 and only_nudges.more_needed >= MIN_PER_ARM
    # an episode without levels after it is counted but not analysed
    gap = verdicts([replace(eps[0], after=()), *eps[1:]])[0]
    assert gap.nudges + gap.controls == len(eps)
    assert gap.nudges_analysed + gap.controls_analysed == len(eps) - 1


def test_detectable_effect_and_episodes_needed() -> None:
    # a 5 % change is more than 8 nights can show
    small = verdicts(simulate(8, nights=8, rate_ratio=0.8), target_peaks=0.05)[0]
    big = verdicts(simulate(8, nights=60, rate_ratio=0.8), target_peaks=0.05)[0]
    assert small.peaks and big.peaks and small.laeq and big.laeq
    assert small.peaks.mde is not None and big.peaks.mde is not None
    # more data, smaller detectable effect (a ratio closer to 1)
    assert small.peaks.mde < big.peaks.mde < 1.0
    assert small.peaks.more_needed > big.peaks.more_needed
    n = small.nudges_analysed + small.controls_analysed
    se = small.peaks.se or 0.0
    z = 1.959963984540054 + 0.8416212335729143
    assert small.peaks.more_needed == math.ceil(n * (z * se / -math.log(0.95)) ** 2) - n
    # with the episodes asked for, the detectable effect comes near the target (roughly:
    # the standard error of new data is a draw too)
    nights = 8 + math.ceil(small.peaks.more_needed / 2.7)
    grown = verdicts(simulate(8, nights=nights, rate_ratio=0.8), target_peaks=0.05)[0]
    assert grown.peaks and grown.peaks.mde is not None and 0.93 < grown.peaks.mde < 0.97


def test_no_peaks_after_controls() -> None:
    eps = simulate(6)
    quiet = [
        replace(e, after=tuple(replace(m, peaks=0) for m in e.after)) if e.control else e
        for e in eps
    ]
    v = verdicts(quiet)[0]
    assert v.peaks and v.peaks.estimate is None and "controls" in v.peaks.note
    assert v.laeq and v.laeq.estimate is not None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"target_peaks 1\.5"):
        verdicts([], target_peaks=1.5)
    with pytest.raises(ValueError, match="target_db -1"):
        verdicts([], target_db=-1.0)
    assert verdicts([]) == []
