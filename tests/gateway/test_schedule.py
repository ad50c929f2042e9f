"""gateway.schedule: window syntax, midnight crossing, DST nights, merged periods."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ScheduleError
from gateway.schedule import DAYS, parse_schedule, parse_window

BRUSSELS = ZoneInfo("Europe/Brussels")


def at(year: int, month: int, day: int, hour: int, minute: int) -> float:
    return dt.datetime(year, month, day, hour, minute, tzinfo=BRUSSELS).timestamp()


def test_days_lists_ranges_and_wrapping_ranges() -> None:
    assert parse_window("mon-sun 23:00-05:00").days == frozenset(range(7))
    assert parse_window("fri,sat 22:00-06:00").days == {DAYS.index("fri"), DAYS.index("sat")}
    assert parse_window("fri-mon 01:00-02:00").days == {4, 5, 6, 0}
    assert parse_window("mon-wed, sat 01:00-02:00").days == {0, 1, 2, 5}
    assert parse_window("00:00-24:00").days == frozenset(range(7))


def test_times_in_minutes() -> None:
    w = parse_window("Fri 22:15-06:45")
    assert (w.start_min, w.end_min) == (22 * 60 + 15, 6 * 60 + 45)
    assert w.crosses_midnight
    assert not parse_window("00:00-24:00").crosses_midnight


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("23:00", "is not a window"),
        ("mon-sun 23:00-25:00", "'25:00' is not a time of day"),
        ("mon-sun 24:00-05:00", "expected 00:00 to 23:59"),
        ("mon-sun 23:60-05:00", "'23:60' is not a time of day"),
        ("monday 23:00-05:00", "'monday' is not a day"),
        ("mon-tue-wed 23:00-05:00", "'mon-tue-wed' is not a day"),
        ("22:00-22:00", "starts and ends at the same time"),
        ("", "is not a window"),
    ],
)
def test_bad_windows_are_explained(text: str, fragment: str) -> None:
    with pytest.raises(ScheduleError) as err:
        parse_window(text)
    assert fragment in str(err.value)
    assert repr(text) in str(err.value)


def test_empty_schedule_refused() -> None:
    with pytest.raises(ScheduleError, match="no active window"):
        parse_schedule([])


def test_night_window_belongs_to_the_day_it_starts() -> None:
    s = parse_schedule(["fri 23:00-02:00"])
    # 2026-11-20 is a Friday
    assert dt.date(2026, 11, 20).weekday() == 4
    assert s.is_active(at(2026, 11, 20, 23, 30), BRUSSELS)
    assert s.is_active(at(2026, 11, 21, 1, 59), BRUSSELS)  # early Saturday: still Friday night
    assert not s.is_active(at(2026, 11, 21, 2, 0), BRUSSELS)  # end is exclusive
    assert not s.is_active(at(2026, 11, 20, 1, 0), BRUSSELS)  # early Friday = Thursday night
    assert not s.is_active(at(2026, 11, 21, 23, 30), BRUSSELS)


def test_period_bounds_are_local_wall_clock() -> None:
    s = parse_schedule(["mon-sun 23:00-05:00"])
    period = s.active_period(at(2026, 11, 20, 23, 30), BRUSSELS)
    assert period == (at(2026, 11, 20, 23, 0), at(2026, 11, 21, 5, 0))


def _offset_h(when: dt.datetime) -> float:
    off = when.utcoffset()
    assert off is not None
    return off.total_seconds() / 3600


@pytest.mark.parametrize("night", [dt.date(2026, 3, 28), dt.date(2026, 10, 24)])
def test_dst_nights_keep_wall_clock_bounds(night: dt.date) -> None:
    """The 23:00-05:00 window is 6 wall-clock hours, minus the hour lost or plus the one gained."""
    s = parse_schedule(["mon-sun 23:00-05:00"])
    start = dt.datetime(night.year, night.month, night.day, 23, tzinfo=BRUSSELS)
    end = dt.datetime.combine(night + dt.timedelta(days=1), dt.time(5), tzinfo=BRUSSELS)
    gained = _offset_h(start) - _offset_h(end)
    assert gained != 0  # the chosen nights do change the clocks
    period = s.active_period(start.timestamp() + 3600, BRUSSELS)
    assert period is not None
    assert (period[1] - period[0]) / 3600 == 6 + gained
    assert dt.datetime.fromtimestamp(period[1], BRUSSELS).hour == 5


def test_window_starting_in_the_skipped_hour_starts_at_the_jump() -> None:
    s = parse_schedule(["sun 02:30-04:00"])
    # 2026-03-29 02:00 CET -> 03:00 CEST: 01:00 UTC is the jump
    jump = dt.datetime(2026, 3, 29, 1, 0, tzinfo=dt.UTC).timestamp()
    assert dt.datetime.fromtimestamp(jump, BRUSSELS).hour == 3
    assert s.active_period(jump + 60, BRUSSELS) == (jump, at(2026, 3, 29, 4, 0))
    assert not s.is_active(jump - 60, BRUSSELS)


def test_window_ending_in_the_repeated_hour_ends_at_its_last_occurrence() -> None:
    s = parse_schedule(["sat 23:00-02:30"])
    # 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens at 00:30 and at 01:30 UTC
    second = dt.datetime(2026, 10, 25, 1, 30, tzinfo=dt.UTC).timestamp()
    assert dt.datetime.fromtimestamp(second, BRUSSELS).strftime("%H:%M") == "02:30"
    period = s.active_period(second - 60, BRUSSELS)
    assert period is not None and period[1] == second


def test_always_is_one_period_across_midnight_and_days() -> None:
    s = parse_schedule(["00:00-24:00"])
    midnight = at(2026, 11, 21, 0, 0)
    before = s.active_period(midnight - 1, BRUSSELS)
    after = s.active_period(midnight, BRUSSELS)
    assert before is not None and after is not None
    # no end at midnight: the period seen just before runs on well past it
    assert before[1] - midnight >= 6 * 86400
    assert after[0] < midnight


def test_touching_windows_merge() -> None:
    s = parse_schedule(["fri 22:00-24:00", "sat 00:00-06:00"])
    period = s.active_period(at(2026, 11, 20, 23, 0), BRUSSELS)
    assert period == (at(2026, 11, 20, 22, 0), at(2026, 11, 21, 6, 0))


def _wall_clock_active(texts: list[str], when: dt.datetime) -> bool:
    """Independent reading of the windows: what the clock on the wall shows."""
    minute = when.hour * 60 + when.minute
    day = when.weekday()
    for text in texts:
        w = parse_window(text)
        if w.crosses_midnight:
            if (day in w.days and minute >= w.start_min) or (
                (day - 1) % 7 in w.days and minute < w.end_min
            ):
                return True
        elif day in w.days and w.start_min <= minute < w.end_min:
            return True
    return False


_window = st.builds(
    lambda days, a, b: f"{days} {a // 60:02d}:{a % 60:02d}-{b // 60:02d}:{b % 60:02d}",
    st.sampled_from(["mon-sun", "fri,sat", "sun-thu", "wed", "sat-mon"]),
    st.integers(0, 1439),
    st.integers(1, 1440),
).filter(lambda t: t.split()[1].split("-")[0] != t.split()[1].split("-")[1])


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(_window, min_size=1, max_size=3),
    seconds=st.integers(1_767_225_600, 1_830_297_600),  # 2026-01-01 .. 2028-01-01
    tzname=st.sampled_from(["Europe/Brussels", "UTC", "America/New_York", "Asia/Kolkata"]),
)
def test_matches_the_wall_clock_away_from_clock_changes(
    texts: list[str], seconds: int, tzname: str
) -> None:
    tz = ZoneInfo(tzname)
    when = dt.datetime.fromtimestamp(seconds, tz)
    # within a day of a clock change the wall clock is ambiguous: covered by the DST tests
    near = [dt.datetime.fromtimestamp(seconds + h * 3600, tz).utcoffset() for h in (-26, 0, 26)]
    if len(set(near)) > 1:
        return
    schedule = parse_schedule(texts)
    assert schedule.is_active(seconds, tz) == _wall_clock_active(texts, when)
    period = schedule.active_period(seconds, tz)
    if period is not None:
        assert period[0] <= seconds < period[1]
