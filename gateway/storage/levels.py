"""Levels: the 1 s records as one row per sensor and minute, and the sensors' own summaries.

The records are folded in memory (`MinuteFold`) and a minute's rows are
written, added to what is stored, once a later minute starts.  A late record
for an older minute is simply added to its stored row.  A crash loses at most
the current minute; `close` and `flush` write everything.

The rows go in transactions of `MINUTE_CHUNK` rows, the connection's lock
released in between, so a decision recorded meanwhile waits for one short
transaction (a few ms), not for a minute of 10,000 sensors (~100 ms).
"""

from __future__ import annotations

import math
import operator
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.events import SUMMARY_FIELDS, LevelEvent, SummaryRecord
from gateway.storage.database import Database
from gateway.storage.minutes import MinuteFold

__all__ = ["MINUTE_CHUNK", "LevelStore", "MinuteRow"]

# minute rows per transaction (~3 ms): what a decision waiting to be recorded may wait
MINUTE_CHUNK = 500

_SUMMARY_COLUMNS = ("sensor", *SUMMARY_FIELDS)
_INSERT_SUMMARY = (
    f"INSERT OR REPLACE INTO summaries ({', '.join(_SUMMARY_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_SUMMARY_COLUMNS))})"
)
_summary_row = operator.attrgetter(*_SUMMARY_COLUMNS)


@dataclass(frozen=True)
class MinuteRow:
    """One sensor's levels over one minute, folded from its 1 s records."""

    sensor: str
    minute: int
    n: int
    dur: float
    laeq: float
    lceq: float
    lafmax: float
    peaks: int
    calibrating: int


class LevelStore(Database):
    """The minute rows and the summaries of a `Database`."""

    def __init__(
        self,
        path: str | Path,
        peak_threshold_db: float = 70.0,
        *,
        read_only: bool = False,
        timezone: str | None = None,
    ) -> None:
        self._minutes = MinuteFold()
        # gateways sharing a store: whether this one stores a sensor's levels now (it
        # holds the sensor's zone), so that each record is added to its minute once
        self.keep_sensor: Callable[[str], bool] | None = None
        self._write_lock = threading.Lock()  # one `write_minutes` at a time
        super().__init__(path, peak_threshold_db, read_only=read_only, timezone=timezone)

    def close(self) -> None:
        """Write what is held in memory and close; the object cannot be used afterwards."""
        self.flush()
        super().close()

    def fold_levels(self, records: Iterable[LevelEvent]) -> int:
        """Fold records into the minute rows held in memory (no disk); return how many.

        Records with levels outside `policy.PLAUSIBLE_DB`, times outside
        1970-2096, or NaN anywhere are skipped (ingest should have refused them).
        `write_minutes` writes the minutes that are over, on any thread.
        """
        keep = self.keep_sensor
        if keep is not None:
            records = [r for r in records if keep(r.sensor)]
        return self._minutes.fold(records, self.peak_threshold_db)

    def minutes_due(self) -> bool:
        """Whether minute rows wait to be written: a later minute has started, or too many."""
        return self._minutes.due()

    def flush(self) -> None:
        """Write the minute rows still held in memory."""
        self.write_minutes(everything=True)

    def write_minutes(self, *, everything: bool = False, chunk: int | None = None) -> int:
        """Write the minute rows of the minutes that are over (all of them if `everything`,
        or if more than the memory bound wait); return how many rows were written.

        In transactions of `chunk` rows (`MINUTE_CHUNK`); a chunk whose transaction
        fails goes back to memory, so no record is lost.
        """
        size = chunk or MINUTE_CHUNK
        written = 0
        with self._write_lock:  # one writer: chunks of the same minute never race
            keys = self._minutes.keys_due(everything)
            for i in range(0, len(keys), size):
                taken = self._minutes.take(keys[i : i + size])
                try:
                    self._write_rows(taken)
                except BaseException:
                    self._minutes.put_back(taken)
                    raise
                written += len(taken)
        if written:
            self.checkpoint()
        return written

    def _write_rows(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with self._tx() as db:
            db.executemany(
                """INSERT INTO levels_minute
                       (sensor, minute, n, dur, energy_a, energy_c, lafmax, peaks, calibrating)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (sensor, minute) DO UPDATE SET
                       n = n + excluded.n, dur = dur + excluded.dur,
                       energy_a = energy_a + excluded.energy_a,
                       energy_c = energy_c + excluded.energy_c,
                       lafmax = max(lafmax, excluded.lafmax),
                       peaks = peaks + excluded.peaks,
                       calibrating = calibrating + excluded.calibrating""",
                rows,
            )

    def add_summaries(self, records: Iterable[SummaryRecord]) -> None:
        """Store sensors' minute summaries as they arrive (a repeat of the same minute replaces).

        In transactions of `MINUTE_CHUNK` rows, like the minute rows: 10,000
        sensors send theirs in the same few seconds.
        """
        rows = [_summary_row(r) for r in records]
        for i in range(0, len(rows), MINUTE_CHUNK):
            with self._tx() as db:
                db.executemany(_INSERT_SUMMARY, rows[i : i + MINUTE_CHUNK])
        if len(rows) > MINUTE_CHUNK:
            self.checkpoint()

    def minute_levels(
        self, sensors: Sequence[str], start: float, end: float, *, include_calibrating: bool = False
    ) -> list[MinuteRow]:
        """Minute rows of `sensors` whose minute starts in [start, end), oldest first."""
        if not sensors:
            return []
        self.flush()
        marks = ",".join("?" * len(sensors))
        rows = self._read(
            f"""SELECT sensor, minute, n, dur, energy_a, energy_c, lafmax, peaks, calibrating
                FROM levels_minute WHERE sensor IN ({marks}) AND minute >= ? AND minute < ?
                ORDER BY minute, sensor""",
            [*sensors, start, end],
        )
        out = []
        for s, m, n, dur, ea, ec, fmax, peaks, cal in rows:
            if cal and not include_calibrating:
                continue
            out.append(
                MinuteRow(
                    sensor=s,
                    minute=m,
                    n=n,
                    dur=dur,
                    laeq=10 * math.log10(ea / dur),
                    lceq=10 * math.log10(ec / dur),
                    lafmax=fmax,
                    peaks=peaks,
                    calibrating=cal,
                )
            )
        return out
