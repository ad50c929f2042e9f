"""When a zone may nudge: active windows per weekday, in the site's local time.

A window is written ``"[DAYS ]HH:MM-HH:MM"``:

- ``"mon-sun 23:00-05:00"``: every night from 23:00 to 05:00 the next morning;
- ``"fri,sat 22:00-06:00"``: Friday and Saturday nights;
- ``"00:00-24:00"``: always (no days means every day).

Days are ``mon tue wed thu fri sat sun``, as a list (``fri,sat``), ranges
(``mon-fri``, which may wrap: ``fri-mon``) or both (``mon-wed,sat``).  A window
whose end is not after its start crosses midnight and belongs to the day it
starts: ``"fri 23:00-02:00"`` is Friday night, ending early Saturday.

Local times are turned into instants with `zoneinfo`, so a window keeps its
wall-clock meaning across daylight-saving changes: the 23:00-05:00 window lasts
five hours on the night clocks go forward and seven on the night they go back.
A time the clock skips (02:30 when it jumps from 02:00 to 03:00) starts or ends
the window at the jump; a time it shows twice starts a window at its first
occurrence and ends one at its last.

Windows that touch or overlap merge into one active period, so ``"00:00-24:00"``
is one period with no end at midnight and a nudge is not cut at 00:00.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from gateway.errors import ScheduleError

__all__ = ["DAYS", "Schedule", "Window", "parse_schedule", "parse_window"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_WINDOW = re.compile(
    r"^\s*(?:(?P<days>[a-z,\-\s]+?)\s+)?(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$"
)
_FORM = 'expected "[DAYS ]HH:MM-HH:MM" such as "mon-sun 23:00-05:00" or "00:00-24:00"'

# Merging looks this many days ahead: enough to merge a week of back-to-back
# windows, and an "always" schedule still yields a finite end that the policy
# re-reads long before it is reached.
_LOOKAHEAD_DAYS = 8


@dataclass(frozen=True)
class Window:
    """One active window: the weekdays it starts on and its local start and end minute."""

    days: frozenset[int]  # 0 = Monday, as datetime.weekday()
    start_min: int  # minutes after local midnight, 0..1439
    end_min: int  # 1..1440; not after start_min means the window ends the next day
    text: str

    @property
    def crosses_midnight(self) -> bool:
        return self.end_min <= self.start_min


@dataclass(frozen=True)
class Schedule:
    """The active windows of one zone."""

    windows: tuple[Window, ...]

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(w.text for w in self.windows)

    def active_period(self, at: float, tz: ZoneInfo) -> tuple[float, float] | None:
        """The active period containing `at` (UTC epoch s) as (start, end) epoch s, or None.

        Periods are half-open: `start <= at < end`.  A schedule that runs for
        days on end (``"00:00-24:00"``) is only followed a week ahead and a day
        back, so its bounds are that far from `at`, not infinite.
        """
        local_day = dt.datetime.fromtimestamp(at, tz).date()
        for start, end in _periods(self, tz.key, local_day.toordinal()):
            if start <= at < end:
                return (start, end)
        return None

    def is_active(self, at: float, tz: ZoneInfo) -> bool:
        """Whether `at` (UTC epoch s) falls in an active window."""
        return self.active_period(at, tz) is not None

    def next_start(self, at: float, tz: ZoneInfo) -> float | None:
        """The start of the first active period after `at` (UTC epoch s), within a week."""
        local_day = dt.datetime.fromtimestamp(at, tz).date()
        for start, _ in _periods(self, tz.key, local_day.toordinal()):
            if start > at:
                return start
        return None


@functools.lru_cache(maxsize=4096)
def _periods(schedule: Schedule, tz_key: str, day: int) -> tuple[tuple[float, float], ...]:
    """Merged active periods of the windows starting from the day before `day` onwards.

    Cached per local day: the policy asks on every record, the answer changes daily.
    """
    tz = ZoneInfo(tz_key)
    spans: list[tuple[float, float]] = []
    for ordinal in range(day - 1, day + _LOOKAHEAD_DAYS):
        date = dt.date.fromordinal(ordinal)
        for w in schedule.windows:
            if date.weekday() not in w.days:
                continue
            end_date = date + dt.timedelta(days=1) if w.crosses_midnight else date
            spans.append(
                (
                    _instant(date, w.start_min, tz, end=False),
                    _instant(end_date, w.end_min, tz, end=True),
                )
            )
    spans.sort()
    merged: list[tuple[float, float]] = []
    for start, end in spans:
        if end <= start:
            continue  # a window swallowed whole by a DST jump
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def _instant(date: dt.date, minute: int, tz: ZoneInfo, *, end: bool) -> float:
    """The UTC instant at which the wall clock reads `minute` on `date` (minute 1440 = 24:00).

    A time the clock shows twice (the hour repeated when clocks go back) is
    read as its first occurrence for a start and its last for an end, so the
    window covers every moment the clock shows a time inside it.  A time the
    clock skips (the hour lost when clocks go forward) is read as the moment of
    the jump: the first moment the clock shows a later time.
    """
    date += dt.timedelta(days=minute // 1440)  # datetime does not accept hour 24
    minute %= 1440
    while True:
        local = dt.datetime(
            date.year, date.month, date.day, minute // 60, minute % 60, tzinfo=tz, fold=int(end)
        )
        at = local.timestamp()
        if dt.datetime.fromtimestamp(at, tz).replace(tzinfo=None) == local.replace(tzinfo=None):
            return at
        # skipped by a jump forward: try the next minute (jumps fall on whole minutes)
        minute += 1
        if minute == 1440:
            date += dt.timedelta(days=1)
            minute = 0


def parse_window(text: str) -> Window:
    """Parse one window such as ``"fri,sat 22:00-06:00"``; raise `ScheduleError` if it is bad."""
    if not isinstance(text, str):
        raise ScheduleError(f"{text!r} is not a window: {_FORM}")
    m = _WINDOW.match(text.lower())
    if m is None:
        raise ScheduleError(f"{text!r} is not a window: {_FORM}")
    days = _parse_days(m.group("days"), text) if m.group("days") else frozenset(range(7))
    start = _parse_time(m.group("start"), text, allow_24=False)
    end = _parse_time(m.group("end"), text, allow_24=True)
    if start == end:
        raise ScheduleError(
            f"{text!r} starts and ends at the same time; for a whole day write "
            '"00:00-24:00", for a night write e.g. "23:00-05:00"'
        )
    return Window(days=days, start_min=start, end_min=end, text=text.strip())


def parse_schedule(texts: list[str] | tuple[str, ...]) -> Schedule:
    """Parse a list of windows; raise `ScheduleError` naming the bad one."""
    if not texts:
        raise ScheduleError(f"no active window given: {_FORM}")
    return Schedule(tuple(parse_window(t) for t in texts))


def _parse_days(spec: str, text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        ends = part.split("-")
        if len(ends) > 2 or not all(e in DAYS for e in ends):
            raise ScheduleError(
                f"{text!r}: {part!r} is not a day or day range; use {', '.join(DAYS)}, "
                'lists like "fri,sat" or ranges like "mon-fri"'
            )
        first = DAYS.index(ends[0])
        last = DAYS.index(ends[-1])
        # ranges wrap around the week: "fri-mon" is fri, sat, sun, mon
        days.update((first + i) % 7 for i in range((last - first) % 7 + 1))
    return frozenset(days)


def _parse_time(hhmm: str, text: str, *, allow_24: bool) -> int:
    hours, minutes = (int(p) for p in hhmm.split(":"))
    total = hours * 60 + minutes
    limit = 1440 if allow_24 else 1439
    if minutes > 59 or total > limit:
        what = "00:00 to 24:00" if allow_24 else "00:00 to 23:59"
        raise ScheduleError(f"{text!r}: {hhmm!r} is not a time of day; expected {what}")
    return total
