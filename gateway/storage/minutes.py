"""The minute rows of the level records, folded in memory and held for a while.

A row is one sensor's minute: the count of records, the seconds covered, the
energy sums for LAeq and LCeq, the max LAFmax, the count of records with
LAFmax >= the peak threshold and of records flagged calibrating.

A row in memory is always the whole of what this gateway folded into its
minute (never a part since the last write), so writing it again is harmless:
the store keeps, of two versions of a row, the one holding more records
(`levels.LevelStore`).  That is what lets gateways that share a city write
each sensor's rows early, again and again, and lets a gateway that takes a
sensor over write the sensor's recent minutes without counting a record twice.

Rows stay in memory for `hold_s` (wall seconds) after their minute was last
folded into, whoever stores them: a gateway that becomes a sensor's storer
(a takeover) writes what it holds of the sensor.  A record that comes after
its minute left memory starts a *late* row, which holds only the late records:
it is added to the stored row once, by the storer, and then forgotten.

10,000 sensors at 1 Hz cost one row per sensor per minute in memory (times
the minutes held), and a write per sensor every few seconds, not per second.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from gateway.events import LevelEvent
from gateway.policy import PLAUSIBLE_DB

__all__ = ["MAX_PENDING", "MinuteFold", "MinuteKey"]

# minute rows held in memory before minutes that are over leave it early (about 20 MB)
MAX_PENDING = 100_000

# 2096: a record time past this is a broken clock, and past 2^63 s SQLite cannot store it
_LAST_EPOCH = 4e9

MinuteKey = tuple[str, int]  # (sensor, UTC epoch s of the minute's start)
Row = tuple[Any, ...]  # (sensor, minute, n, dur, energy_a, energy_c, lafmax, peaks, calibrating)

_DIRTY = 7  # index of a row's flag: changed since it was last taken for writing
_WRITTEN = 8  # index of a row's flag: this gateway has written it (`snapshot`)


def _new() -> list[float]:
    # n, dur, energy_a, energy_c, lafmax, peaks, calibrating, dirty, written
    return [0, 0.0, 0.0, 0.0, -math.inf, 0, 0, 1, 0]


def _add(
    row: list[float], n: int, dur: float, ea: float, ec: float, fmax: float, peaks: int, cal: int
) -> None:
    row[0] += n
    row[1] += dur
    row[2] += ea
    row[3] += ec
    row[4] = max(row[4], fmax)
    row[5] += peaks
    row[6] += cal


class MinuteFold:
    """Minute rows in memory, under a lock of their own (any thread may fold or take).

    `fold` adds records; `take_dirty` names the rows changed since they were
    last taken, `snapshot` copies rows for writing (they stay in memory),
    `mark_dirty` asks for rows to be written again (a failed write, a
    takeover); `take_late` removes the late rows, `put_back_late` returns
    those whose write failed; `evict` forgets minutes no longer needed.
    """

    def __init__(
        self, hold_s: float = 60.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self.hold_s = hold_s
        self.monotonic = monotonic
        # (sensor, minute) -> [n, dur, energy_a, energy_c, lafmax, peaks, calibrating, dirty]
        self._rows: dict[MinuteKey, list[float]] = {}
        self._by_minute: dict[int, list[MinuteKey]] = {}  # minute -> its keys in `_rows`
        self._touched: dict[int, float] = {}  # minute -> monotonic time of its last fold
        self._dirty: list[MinuteKey] = []  # keys whose flag went up, in order
        # late rows: records of minutes that had already left memory, to be added once
        self._late: dict[MinuteKey, list[float]] = {}
        # rows written as deltas (`take_deltas`): what has been added to the store so far
        self._added: dict[MinuteKey, list[float]] = {}
        self._newest = -(2**62)
        self._gone_upto = -(2**62)  # the newest minute that left memory

    def fold(self, records: Iterable[LevelEvent], peak_threshold_db: float) -> int:
        """Fold records into the rows; return how many were folded.

        Records with levels outside `policy.PLAUSIBLE_DB`, times outside
        1970-2096, or NaN anywhere are skipped (ingest should have refused them).
        """
        threshold = peak_threshold_db
        count = 0
        now = self.monotonic()
        with self._lock:
            acc = self._rows
            by_minute = self._by_minute
            touched = self._touched
            dirty = self._dirty
            newest = self._newest
            current = None  # the minute of the record before, known to be held
            for r in records:
                if not (
                    PLAUSIBLE_DB[0] <= r.laeq <= PLAUSIBLE_DB[1]
                    and PLAUSIBLE_DB[0] <= r.lafmax <= PLAUSIBLE_DB[1]
                    and PLAUSIBLE_DB[0] <= r.lceq <= PLAUSIBLE_DB[1]
                    and 0.0 <= r.t0 <= _LAST_EPOCH
                    and 0.0 <= r.t1 <= _LAST_EPOCH
                ):
                    continue  # NaN and absurd values would poison or overflow the sums
                d = r.t1 - r.t0 if r.t1 > r.t0 else 1.0
                minute = int(r.t0 // 60) * 60
                if minute != current:
                    if minute <= self._gone_upto and minute not in by_minute:
                        self._fold_late(r, minute, d, threshold)
                        count += 1
                        continue
                    touched[minute] = now
                    current = minute
                    if minute > newest:
                        newest = minute
                key = (r.sensor, minute)
                row = acc.get(key)
                if row is None:
                    row = acc[key] = _new()
                    dirty.append(key)
                    keys = by_minute.get(minute)
                    if keys is None:
                        by_minute[minute] = [key]
                    else:
                        keys.append(key)
                elif not row[_DIRTY]:
                    row[_DIRTY] = 1
                    dirty.append(key)
                row[0] += 1
                row[1] += d
                row[2] += d * 10.0 ** (r.laeq / 10.0)
                row[3] += d * 10.0 ** (r.lceq / 10.0)
                if r.lafmax > row[4]:
                    row[4] = r.lafmax
                row[5] += r.lafmax >= threshold
                row[6] += "calibrating" in r.flags
                count += 1
            self._newest = newest
        return count

    def _fold_late(self, r: LevelEvent, minute: int, d: float, threshold: float) -> None:
        row = self._late.get((r.sensor, minute))
        if row is None:
            row = self._late[(r.sensor, minute)] = _new()
        _add(
            row,
            1,
            d,
            d * 10.0 ** (r.laeq / 10.0),
            d * 10.0 ** (r.lceq / 10.0),
            r.lafmax,
            int(r.lafmax >= threshold),
            int("calibrating" in r.flags),
        )

    @property
    def newest(self) -> int:
        """The newest minute folded (UTC epoch s of its start)."""
        return self._newest

    def pending(self, *, current: bool) -> bool:
        """Whether rows wait to be written: late rows, or changed rows of minutes that are
        over (with `current`, of the newest minute too), or too many rows."""
        with self._lock:
            if self._late or len(self._rows) > MAX_PENDING:
                return True
            if current:
                return bool(self._dirty)
            newest = self._newest
            return any(k[1] < newest for k in self._dirty)

    def take_dirty(self, *, current: bool) -> list[MinuteKey]:
        """The keys of the rows changed since they were last taken, oldest change first; their
        flags go down.  Without `current`, the newest minute's rows are left for later."""
        with self._lock:
            rows = self._rows
            newest = self._newest
            if current:
                keys, self._dirty = self._dirty, []
            else:
                keys = [k for k in self._dirty if k[1] < newest]
                self._dirty = [k for k in self._dirty if k[1] >= newest]
            out = []
            for key in keys:
                row = rows.get(key)
                if row is not None and row[_DIRTY]:
                    row[_DIRTY] = 0
                    out.append(key)
            return out

    def snapshot(self, keys: Sequence[MinuteKey]) -> list[Row]:
        """Copies of these rows as `levels_minute` rows, for writing (they stay in memory,
        marked `written`; missing keys are skipped)."""
        out = []
        with self._lock:
            rows = self._rows
            for key in keys:
                v = rows.get(key)
                if v is not None:
                    v[_WRITTEN] = 1
                    s, m = key
                    out.append((s, m, int(v[0]), v[1], v[2], v[3], v[4], int(v[5]), int(v[6])))
        return out

    def written(self, key: MinuteKey) -> bool:
        """Whether this gateway has written the row (it goes on writing it while it changes)."""
        row = self._rows.get(key)
        return row is not None and bool(row[_WRITTEN])

    def mark_dirty(self, keys: Iterable[MinuteKey]) -> None:
        """Ask for these rows to be written again (their write failed)."""
        with self._lock:
            for key in keys:
                self.mark_dirty_locked(key)

    def mark_dirty_locked(self, key: MinuteKey) -> None:
        row = self._rows.get(key)
        if row is not None and not row[_DIRTY]:
            row[_DIRTY] = 1
            self._dirty.append(key)

    def mark_sensors(self, stores: Callable[[str], bool]) -> int:
        """Ask for every row of the sensors `stores` names to be written (this gateway has
        just become their storer); return how many rows."""
        with self._lock:
            memo: dict[str, bool] = {}
            marked = 0
            for key, row in self._rows.items():
                s = key[0]
                ours = memo.get(s)
                if ours is None:
                    ours = memo[s] = stores(s)
                if ours:
                    marked += 1
                    if not row[_DIRTY]:
                        row[_DIRTY] = 1
                        self._dirty.append(key)
            return marked

    def take_deltas(self, keys: Sequence[MinuteKey]) -> list[Row]:
        """What these rows gained since they were last taken this way, as `levels_minute`
        rows to be added (rows that gained nothing are left out; the max LAFmax is the
        row's own, as adding a max again changes nothing)."""
        out = []
        with self._lock:
            rows, added = self._rows, self._added
            for key in keys:
                v = rows.get(key)
                if v is None:
                    continue
                v[_WRITTEN] = 1
                was = added.get(key)
                if was is None:
                    was = added[key] = [0, 0.0, 0.0, 0.0, -math.inf, 0, 0]
                if v[0] == was[0]:
                    continue
                delta = [v[i] - was[i] for i in range(7)]
                was[:] = v[:7]
                s, m = key
                out.append(
                    (
                        s,
                        m,
                        int(delta[0]),
                        delta[1],
                        delta[2],
                        delta[3],
                        v[4],
                        int(delta[5]),
                        int(delta[6]),
                    )
                )
        return out

    def put_back_deltas(self, rows: Sequence[Row]) -> None:
        """Deltas whose write failed: they are taken again with what the rows gain meanwhile."""
        with self._lock:
            for s, m, n, dur, ea, ec, _fmax, peaks, cal in rows:
                was = self._added.get((s, m))
                if was is not None:
                    _add(was, -n, -dur, -ea, -ec, -math.inf, -peaks, -cal)
                self.mark_dirty_locked((s, m))

    def take_late(self) -> list[Row]:
        """Remove the late rows and return them as `levels_minute` rows, to be added."""
        with self._lock:
            late, self._late = self._late, {}
        return [
            (s, m, int(v[0]), v[1], v[2], v[3], v[4], int(v[5]), int(v[6]))
            for (s, m), v in late.items()
        ]

    def put_back_late(self, rows: Sequence[Row]) -> None:
        """Return late rows whose write failed: they join what came late meanwhile."""
        with self._lock:
            for s, m, n, dur, ea, ec, fmax, peaks, cal in rows:
                row = self._late.get((s, m))
                if row is None:
                    row = self._late[(s, m)] = _new()
                _add(row, n, dur, ea, ec, fmax, peaks, cal)

    def evict(self, keep: Callable[[MinuteKey], bool]) -> int:
        """Forget the minutes that are over and were last folded into `hold_s` ago or more
        (any minute that is over, past `MAX_PENDING` rows), except for a minute with a row
        that `keep` says still has to be written; return the rows forgotten."""
        now = self.monotonic()
        gone = 0
        with self._lock:
            crowded = len(self._rows) > MAX_PENDING
            newest = self._newest
            for minute in sorted(self._by_minute):
                if minute >= newest:
                    break
                if not crowded and now - self._touched.get(minute, now) < self.hold_s:
                    continue
                keys = self._by_minute[minute]
                if any(self._rows[k][_DIRTY] and keep(k) for k in keys):
                    continue
                for k in keys:
                    del self._rows[k]
                    self._added.pop(k, None)
                gone += len(keys)
                del self._by_minute[minute]
                self._touched.pop(minute, None)
                self._gone_upto = max(self._gone_upto, minute)
            if gone:
                self._dirty = [k for k in self._dirty if k in self._rows]
        return gone

    def __len__(self) -> int:
        return len(self._rows)
