"""The minute rows of the level records, folded in memory until they are written.

A row is one sensor's minute: the count of records, the seconds covered, the
energy sums for LAeq and LCeq, the max LAFmax, the count of records with
LAFmax >= the peak threshold and of records flagged calibrating.  Rows stay
here while their minute is the newest seen, so 10,000 sensors at 1 Hz cost
one write per sensor per minute, not per second.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.events import LevelEvent
from gateway.policy import PLAUSIBLE_DB

__all__ = ["MAX_PENDING", "MinuteFold", "MinuteKey"]

# minute rows held in memory before a write is forced (about 20 MB)
MAX_PENDING = 100_000

# 2096: a record time past this is a broken clock, and past 2^63 s SQLite cannot store it
_LAST_EPOCH = 4e9

MinuteKey = tuple[str, int]  # (sensor, UTC epoch s of the minute's start)


class MinuteFold:
    """Minute rows not yet written, under a lock of their own (any thread may fold or take).

    A row taken for writing (`take`) leaves memory; if its write fails it comes
    back (`put_back`), added to what was folded into its minute meanwhile.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (sensor, minute) -> [n, dur, energy_a, energy_c, lafmax, peaks, calibrating]
        self._rows: dict[MinuteKey, list[float]] = {}
        self._per_minute: dict[int, int] = {}  # minute -> its rows in `_rows`
        self._newest = -(2**62)

    def fold(self, records: Iterable[LevelEvent], peak_threshold_db: float) -> int:
        """Fold records into the rows; return how many were folded.

        Records with levels outside `policy.PLAUSIBLE_DB`, times outside
        1970-2096, or NaN anywhere are skipped (ingest should have refused them).
        """
        threshold = peak_threshold_db
        count = 0
        with self._lock:
            acc = self._rows
            per_minute = self._per_minute
            newest = self._newest
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
                if minute > newest:
                    newest = minute
                key = (r.sensor, minute)
                row = acc.get(key)
                if row is None:
                    row = acc[key] = [0, 0.0, 0.0, 0.0, -math.inf, 0, 0]
                    per_minute[minute] = per_minute.get(minute, 0) + 1
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

    def due(self) -> bool:
        """Whether rows wait to be written: a later minute has started, or too many are held."""
        with self._lock:
            return bool(self._per_minute) and (
                min(self._per_minute) < self._newest or len(self._rows) > MAX_PENDING
            )

    def keys_due(self, everything: bool = False) -> list[MinuteKey]:
        """The rows of the minutes that are over (all of them if `everything` or too many)."""
        with self._lock:
            if everything or len(self._rows) > MAX_PENDING:
                return list(self._rows)
            newest = self._newest
            return [k for k in self._rows if k[1] < newest]

    def take(self, keys: Sequence[MinuteKey]) -> list[tuple[Any, ...]]:
        """Remove these rows and return them as `levels_minute` rows (missing keys are skipped)."""
        rows = []
        with self._lock:
            per_minute = self._per_minute
            for key in keys:
                v = self._rows.pop(key, None)
                if v is None:
                    continue
                s, m = key
                left = per_minute[m] - 1
                if left:
                    per_minute[m] = left
                else:
                    del per_minute[m]
                rows.append((s, m, int(v[0]), v[1], v[2], v[3], v[4], int(v[5]), int(v[6])))
        return rows

    def put_back(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Return rows from `take` whose write failed: they join what was folded since."""
        with self._lock:
            for s, m, n, dur, ea, ec, fmax, peaks, cal in rows:
                row = self._rows.get((s, m))
                if row is None:
                    row = self._rows[(s, m)] = [0, 0.0, 0.0, 0.0, -math.inf, 0, 0]
                    self._per_minute[m] = self._per_minute.get(m, 0) + 1
                row[0] += n
                row[1] += dur
                row[2] += ea
                row[3] += ec
                row[4] = max(row[4], fmax)
                row[5] += peaks
                row[6] += cal
