"""Levels: the 1 s records as one row per sensor and minute, and the sensors' own summaries.

The records are folded in memory (`MinuteFold`).  A row is written once its
minute is over, and the newest minute's rows every `EARLY_WRITE_S` (wall)
while it lasts, so a gateway killed loses a few seconds at most, not its
minute.  A row goes to the store whole (everything folded into its minute so
far), with an upsert in which **the version holding more records wins**: a
row written again, or by two gateways, is never summed twice.  Records whose
minute had already left memory (`MinuteFold.hold_s` after it was last folded
into: a sensor's backlog) are *added* to the stored row, once, by the storer
(other gateways drop them, so such records that come during a takeover are lost).

Gateways sharing a store (PostgreSQL) each fold every sensor's records, but
only a sensor's *storer* writes them: `keep_sensor(sensor)` says whether this
gateway is the storer now (the service derives it from the zone leases).
When the answer changes (`keep_token()` returns something else: the leases
held changed), every row held of the sensors this gateway now stores is
written again, so a takeover writes what the old storer had not, from memory
that covers the lease time and more.  SQLite has one gateway, the storer of all.

A gateway that is the store's only writer (SQLite) and restarts holds only the
end of the minute it started in, while the store holds the part written before:
rows of minutes that began before `head_before` (its start) are added, as what
they gained since they were last written, instead.

A gateway also goes on writing, while they change, the rows it has written
before: when it hands a sensor over (a second gateway starts and takes its
share of the zones), it finishes the minutes it began, so the minute in which
the newcomer started, of which the newcomer holds only the end, still ends up
whole in the store.

The limit of "more records wins": it is exact when one version holds all the
other's records, as when both gateways received the sensor's records from
before the minute began.  If a storer dies in the very minute in which the
gateway taking over started, the minute keeps the larger of the two parts.

The rows go in transactions of `MINUTE_CHUNK` rows, the connection's lock
released in between, so a decision recorded meanwhile waits for one short
transaction (a few ms), not for a minute of 10,000 sensors (~100 ms).
"""

from __future__ import annotations

import math
import operator
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.events import SUMMARY_FIELDS, LevelEvent, SummaryRecord
from gateway.storage.database import Database
from gateway.storage.minutes import MinuteFold

__all__ = ["EARLY_WRITE_S", "MINUTE_CHUNK", "LevelStore", "MinuteRow"]

# minute rows per transaction (~3 ms): what a decision waiting to be recorded may wait
MINUTE_CHUNK = 500
# the newest minute's changed rows are written this often (wall seconds): what a gateway
# killed (SIGKILL) can lose when no other takes its sensors over
EARLY_WRITE_S = 5.0

_COLUMNS = "sensor, minute, n, dur, energy_a, energy_c, lafmax, peaks, calibrating"
# a whole row: of two versions of a minute, the one holding more records wins
_UPSERT_WHOLE = f"""INSERT INTO levels_minute ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (sensor, minute) DO UPDATE SET
        n = excluded.n, dur = excluded.dur, energy_a = excluded.energy_a,
        energy_c = excluded.energy_c, lafmax = excluded.lafmax, peaks = excluded.peaks,
        calibrating = excluded.calibrating
    WHERE excluded.n > n"""
# late records of a minute that left memory: added to the stored row
_UPSERT_LATE = f"""INSERT INTO levels_minute ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (sensor, minute) DO UPDATE SET
        n = n + excluded.n, dur = dur + excluded.dur,
        energy_a = energy_a + excluded.energy_a,
        energy_c = energy_c + excluded.energy_c,
        lafmax = max(lafmax, excluded.lafmax),
        peaks = peaks + excluded.peaks,
        calibrating = calibrating + excluded.calibrating"""

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
        # gateways sharing a store: whether this one is a sensor's storer now (None: the
        # storer of every sensor), and what changes when that may have changed
        self.keep_sensor: Callable[[str], bool] | None = None
        self.keep_token: Callable[[], object] | None = None
        self._token: object = None
        self._write_lock = threading.Lock()  # one `write_minutes` at a time
        self._early_at = time.monotonic()  # the newest minute's rows were last written
        # the only writer of the store (a SQLite file) sets this to when it started: rows of
        # minutes that began before hold only what came since, and are added as deltas
        self.head_before: float | None = None
        super().__init__(path, peak_threshold_db, read_only=read_only, timezone=timezone)

    def close(self) -> None:
        """Write what is held in memory and close; the object cannot be used afterwards."""
        self.flush()
        super().close()

    @property
    def hold_s(self) -> float:
        """Wall seconds a minute stays in memory after it was last folded into."""
        return self._minutes.hold_s

    @hold_s.setter
    def hold_s(self, seconds: float) -> None:
        self._minutes.hold_s = seconds

    def fold_levels(self, records: Iterable[LevelEvent]) -> int:
        """Fold records into the minute rows held in memory (no disk); return how many.

        Records with levels outside `policy.PLAUSIBLE_DB`, times outside
        1970-2096, or NaN anywhere are skipped (ingest should have refused them).
        Every record is folded, whoever stores its sensor; `write_minutes`
        writes, on any thread.
        """
        return self._minutes.fold(records, self.peak_threshold_db)

    def minutes_due(self) -> bool:
        """Whether minute rows wait to be written: a later minute has started, the newest
        minute's were last written `EARLY_WRITE_S` ago, late records came, or the sensors
        this gateway stores may have changed."""
        early = time.monotonic() - self._early_at >= EARLY_WRITE_S
        token = self.keep_token
        return (token is not None and token() != self._token) or self._minutes.pending(
            current=early
        )

    def flush(self) -> None:
        """Write the minute rows changed since they were written, the newest minute's too."""
        self.write_minutes(everything=True)

    def write_minutes(self, *, everything: bool = False, chunk: int | None = None) -> int:
        """Write the changed rows of the sensors this gateway stores: of the minutes that are
        over, and of the newest minute too if `everything` or every `EARLY_WRITE_S`; then
        forget the minutes held long enough.  Return how many rows were written.

        In transactions of `chunk` rows (`MINUTE_CHUNK`); the rows of a chunk whose
        transaction fails stay in memory, to be written at the next call.
        """
        size = chunk or MINUTE_CHUNK
        written = 0
        fold = self._minutes
        with self._write_lock:  # one writer: chunks of the same minute never race
            keep = self.keep_sensor
            memo: dict[str, bool] = {}

            def ours(sensor: str) -> bool:
                found = memo.get(sensor)
                if found is None:
                    found = memo[sensor] = keep is None or keep(sensor)
                return found

            taken_over = False
            if self.keep_token is not None:
                token = self.keep_token()
                if token != self._token:
                    # this gateway may store other sensors now: write all it holds of them,
                    # the newest minute's rows too
                    taken_over = fold.mark_sensors(ours) > 0
                    self._token = token
            late = [r for r in fold.take_late() if ours(r[0])]
            for i in range(0, len(late), size):
                try:
                    self._write_rows(_UPSERT_LATE, late[i : i + size])
                except BaseException:
                    fold.put_back_late(late[i:])
                    raise
                written += min(size, len(late) - i)
            now = time.monotonic()
            current = everything or taken_over or now - self._early_at >= EARLY_WRITE_S
            if current:
                self._early_at = now
            # and rows written here before: the old storer finishes the minutes it began
            # (see the module doc), harmless as the row holding more records wins
            keys = [k for k in fold.take_dirty(current=current) if ours(k[0]) or fold.written(k)]
            head = self.head_before
            if head is not None:
                heads = [k for k in keys if k[1] < head]
                keys = [k for k in keys if k[1] >= head]
                for i in range(0, len(heads), size):
                    deltas = fold.take_deltas(heads[i : i + size])
                    try:
                        self._write_rows(_UPSERT_LATE, deltas)
                    except BaseException:
                        fold.put_back_deltas(deltas)
                        fold.mark_dirty(heads[i + size :] + keys)
                        raise
                    written += len(deltas)
            for i in range(0, len(keys), size):
                part = keys[i : i + size]
                try:
                    self._write_rows(_UPSERT_WHOLE, fold.snapshot(part))
                except BaseException:
                    fold.mark_dirty(keys[i:])
                    raise
                written += len(part)
            fold.evict(lambda key: ours(key[0]) or fold.written(key))
        if written:
            self.checkpoint()
        return written

    def _write_rows(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with self._tx() as db:
            db.executemany(sql, rows)

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
