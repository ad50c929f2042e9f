"""Window arithmetic against the plain definitions it makes cheaper."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from gateway import windows

_t1 = st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 9.0, 10.0])
_records = st.lists(
    st.tuples(_t1, st.sampled_from([1.0, 0.5]), st.floats(1.0, 1e9), st.floats(30.0, 110.0)),
    max_size=12,
    unique_by=lambda r: r[0],
).map(lambda rs: tuple(sorted(rs)))
_bound = st.sampled_from([-1.0, 0.0, 0.7, 2.0, 2.5, 10.0, 11.0])


@given(_records, _bound, _bound)
def test_inside_is_the_records_in_the_half_open_span(
    recent: windows.Window, lo: float, hi: float
) -> None:
    assert windows.inside(recent, lo, hi) == tuple(r for r in recent if lo < r[0] <= hi)


@given(_records, _bound)
def test_prune_drops_what_ended_at_or_before_lo(recent: windows.Window, lo: float) -> None:
    pruned = windows.prune(recent, lo)
    assert pruned == tuple(r for r in recent if r[0] > lo)
    # nothing dropped: the same tuple, which tells the policy its sums still hold
    assert (pruned is recent) == all(r[0] > lo for r in recent)


@given(_records, _t1)
def test_add_keeps_end_time_order_and_refuses_a_repeat(recent: windows.Window, t1: float) -> None:
    rec = windows.record(t1 - 1.0, t1, 60.0, 70.0)
    out = windows.add(recent, rec)
    if any(r[0] == t1 for r in recent):
        assert out is None
    else:
        assert out == tuple(sorted((*recent, rec)))


@given(_records, st.floats(30.0, 110.0))
def test_sums_are_the_sums_of_the_records(recent: windows.Window, threshold: float) -> None:
    energy, seconds, peaks = windows.sums(recent, threshold)
    assert math.isclose(energy, math.fsum(r[2] for r in recent))
    assert seconds == sum(r[1] for r in recent)
    assert peaks == len([r for r in recent if r[3] >= threshold])


def test_a_record_holds_its_energy_and_one_without_duration_weighs_a_second() -> None:
    t1, seconds, energy, lafmax = windows.record(10.0, 12.0, 60.0, 75.0)
    assert (t1, seconds, lafmax) == (12.0, 2.0, 75.0)
    assert math.isclose(windows.laeq(energy, seconds), 60.0)
    assert windows.record(12.0, 12.0, 60.0, 75.0)[1] == 1.0
