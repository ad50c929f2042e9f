"""What the gateway remembers, in one SQLite file: levels, decisions, commands, subscribers.

- Levels: the 1 s records are folded into one row per sensor and minute
  (energy sums for LAeq and LCeq, the max LAFmax, the count of records with
  LAFmax >= the peak threshold).  `add_levels` folds batches in memory and
  writes a minute's rows in one transaction with `executemany` when the next
  minute starts, so 10,000 sensors at 1 Hz cost one upsert per sensor per
  minute.  Sensors' own minute summaries are kept as they arrive.
- Decisions of the policy, with their evidence; episodes (nudges and
  controls) for the evaluation report; light commands sent and acknowledged;
  notifications; Web Push subscriptions; the policy state for restarts;
  counters of rejected input.

The file is in WAL mode (readers such as `hushlight report` do not block the
gateway) with ``synchronous=NORMAL``: a power cut may lose the last
transaction, never corrupt the file.  The schema version lives in
``PRAGMA user_version``; a file from a newer version is refused.

Threads: one `Storage` may be called from any thread (the service writes
levels and the policy state from worker threads, and records decisions on
its event loop, where a short transaction costs less than a thread hop); a lock
serialises the calls, so two calls never interleave on the connection.  The
minute rows are folded under a lock of their own and written in chunks of
`MINUTE_CHUNK` rows, one transaction each, so recording a decision never
waits for more than one short transaction.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from gateway.config import SiteConfig
from gateway.errors import StateError, StorageError
from gateway.policy import (
    PLAUSIBLE_DB,
    Control,
    Decision,
    EpisodeEnded,
    Nudge,
    Override,
    PolicyState,
    Release,
    state_from_json,
    state_to_json,
)

__all__ = [
    "SCHEMA_VERSION",
    "EpisodeRow",
    "LevelRecord",
    "MinuteRow",
    "Storage",
    "Subscription",
    "SummaryRecord",
]

SCHEMA_VERSION = 1

# minute rows held in memory before a write is forced (about 20 MB)
_MAX_PENDING = 100_000

# minute rows per transaction (~3 ms): what a decision waiting to be recorded may wait
MINUTE_CHUNK = 500

# pages (4 KiB) in the WAL before a commit checkpoints it by itself (~64 MB); the
# gateway's own checkpoints keep it far smaller
_AUTOCHECKPOINT_PAGES = 16_000

# 2096: a record time past this is a broken clock, and past 2^63 s SQLite cannot store it
_LAST_EPOCH = 4e9

_SCHEMA = """
CREATE TABLE IF NOT EXISTS levels_minute (
    sensor TEXT NOT NULL,
    minute INTEGER NOT NULL,        -- UTC epoch s of the minute's start
    n INTEGER NOT NULL,             -- records folded in
    dur REAL NOT NULL,              -- seconds covered
    energy_a REAL NOT NULL,         -- sum of duration * 10^(LAeq/10)
    energy_c REAL NOT NULL,         -- sum of duration * 10^(LCeq/10)
    lafmax REAL NOT NULL,
    peaks INTEGER NOT NULL,         -- records with LAFmax >= peak threshold
    calibrating INTEGER NOT NULL,   -- records flagged calibrating (a test tone, not street noise)
    PRIMARY KEY (sensor, minute)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS levels_minute_by_time ON levels_minute (minute);
CREATE TABLE IF NOT EXISTS summaries (
    sensor TEXT NOT NULL, seq INTEGER NOT NULL, t0 REAL NOT NULL, t1 REAL NOT NULL,
    laeq REAL, lafmax REAL, lamin REAL, l10 REAL, l50 REAL, l90 REAL, lceq REAL, peaks INTEGER,
    PRIMARY KEY (sensor, t0)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    zone TEXT NOT NULL,
    type TEXT NOT NULL,
    episode TEXT,
    data TEXT NOT NULL              -- the decision as JSON, evidence included
);
CREATE INDEX IF NOT EXISTS decisions_by_time ON decisions (at);
CREATE TABLE IF NOT EXISTS episodes (
    id TEXT PRIMARY KEY,            -- nudge_id or control_id
    zone TEXT NOT NULL,
    at REAL NOT NULL,
    control INTEGER NOT NULL,
    kind TEXT NOT NULL,
    laeq REAL NOT NULL,
    sensors TEXT NOT NULL,          -- JSON list: the zone's sensors when it fired
    evidence TEXT NOT NULL,
    ended_at REAL,
    end_reason TEXT
);
CREATE INDEX IF NOT EXISTS episodes_by_time ON episodes (at);
CREATE TABLE IF NOT EXISTS commands (
    cmd_id TEXT PRIMARY KEY,
    zone TEXT NOT NULL,
    grp TEXT NOT NULL,
    level REAL,                     -- NULL = release (back to programme)
    ramp_s REAL,
    expires_at REAL,
    reason TEXT NOT NULL,
    episode TEXT NOT NULL,
    evidence TEXT NOT NULL,
    sent_at REAL NOT NULL,
    acked_at REAL
);
CREATE INDEX IF NOT EXISTS commands_by_group ON commands (grp, sent_at);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY,
    nudge_id TEXT NOT NULL,
    channel TEXT NOT NULL,          -- "mqtt", "webpush", ...
    target TEXT NOT NULL,           -- topic or subscription endpoint
    at REAL NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_by_nudge ON notifications (nudge_id);
CREATE TABLE IF NOT EXISTS subscriptions (
    endpoint TEXT PRIMARY KEY,
    keys TEXT NOT NULL,             -- JSON {"p256dh": ..., "auth": ...}
    created REAL NOT NULL,
    last_push_at REAL
);
CREATE TABLE IF NOT EXISTS subscription_zones (
    endpoint TEXT NOT NULL REFERENCES subscriptions (endpoint) ON DELETE CASCADE,
    zone TEXT NOT NULL,
    PRIMARY KEY (zone, endpoint)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS policy_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    saved_at REAL NOT NULL,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rejects (
    sensor TEXT NOT NULL,
    reason TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (sensor, reason)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class LevelRecord(Protocol):
    """What `add_levels` reads from each record (a `policy.LevelEvent` fits)."""

    @property
    def sensor(self) -> str: ...
    @property
    def t0(self) -> float: ...
    @property
    def t1(self) -> float: ...
    @property
    def laeq(self) -> float: ...
    @property
    def lafmax(self) -> float: ...
    @property
    def lceq(self) -> float: ...
    @property
    def flags(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class SummaryRecord:
    """A sensor's own one-minute summary (``.../summary`` topic); times in UTC epoch s."""

    sensor: str
    seq: int
    t0: float
    t1: float
    laeq: float
    lafmax: float
    lamin: float
    l10: float
    l50: float
    l90: float
    lceq: float
    peaks: int


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


@dataclass(frozen=True)
class EpisodeRow:
    """A stored nudge or control."""

    id: str
    zone: str
    at: float
    control: bool
    kind: str
    laeq: float
    sensors: tuple[str, ...]
    ended_at: float | None
    end_reason: str | None


@dataclass(frozen=True)
class Subscription:
    """A resident's Web Push subscription."""

    endpoint: str
    keys: Mapping[str, str]
    zones: tuple[str, ...]
    created: float
    last_push_at: float | None


class Storage:
    """The gateway's SQLite database; see the module docstring for what lives where."""

    def __init__(
        self,
        path: str | Path,
        peak_threshold_db: float = 70.0,
        *,
        read_only: bool = False,
        timezone: str | None = None,
    ) -> None:
        """Open (or create) the database at `path`.

        `read_only` opens an existing hushlight database for reading only (the
        report): nothing is created or written, so it also works on a copy the
        reader may not write, next to a running gateway.
        """
        self.path = Path(path)
        self.peak_threshold_db = peak_threshold_db
        self.read_only = read_only
        # the site's time zone, kept for readers that show times to people (the report);
        # None when the writer did not say
        self.timezone = timezone
        # Three locks, so that folding records in memory and writing a minute's
        # rows never make a decision wait for more than one short transaction:
        # `_lock` guards the connection, `_fold_lock` the rows in memory, and
        # `_write_lock` lets one `write_minutes` run at a time.
        self._lock = threading.Lock()
        self._fold_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._checkpointer: sqlite3.Connection | None = None  # opened on first `checkpoint`
        # minute rows not yet written: (sensor, minute) -> [n, dur, energy_a, energy_c,
        # lafmax, peaks, calibrating]
        self._pending: dict[tuple[str, int], list[float]] = {}
        self._pending_minutes: dict[int, int] = {}  # minute -> its rows in `_pending`
        self._newest_minute = -(2**62)
        # One gateway writes one database: a second one on the same file would
        # interleave its decisions and commands with the first one's and release
        # lights the other still holds.  Readers (the report) take no lock.
        self._lock_file = None if read_only else _hold_lock(self.path)
        target = f"{self.path.absolute().as_uri()}?mode=ro" if read_only else str(self.path)
        try:
            self._db = sqlite3.connect(
                target,
                check_same_thread=False,
                isolation_level=None,
                timeout=10.0,
                uri=read_only,
            )
        except sqlite3.Error as exc:
            self._unlock()
            what = (
                "it exists and is readable" if read_only else "the directory exists and is writable"
            )
            raise StorageError(
                f"{self.path}: cannot open the database ({exc}); check {what}, or set storage.path"
            ) from exc
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            self._unlock()
            raise StorageError(
                f"{self.path}: not a usable SQLite database ({exc}); point storage.path at a new "
                "file or at a hushlight database"
            ) from exc
        except StorageError:
            self._db.close()
            self._unlock()
            raise

    def _unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing the file ends its lock
            self._lock_file = None

    def _setup(self) -> None:
        db = self._db
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{self.path}: written by a newer hushlight (schema {version}, this one reads up "
                f"to {SCHEMA_VERSION}); upgrade hushlight or use another file"
            )
        if self.read_only:
            if version != SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path}: not a hushlight database (schema {version}, expected "
                    f"{SCHEMA_VERSION}); give the storage.path of the gateway's config"
                )
            # a reader counts peaks as the writer did
            row = db.execute("SELECT value FROM meta WHERE key = 'peak_threshold_db'").fetchone()
            if row is not None:
                self.peak_threshold_db = float(row[0])
            row = db.execute("SELECT value FROM meta WHERE key = 'timezone'").fetchone()
            if row is not None:
                self.timezone = str(row[0])
            return
        if version == 0:
            tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()
            if tables[0]:
                raise StorageError(
                    f"{self.path}: holds other tables and no hushlight schema; "
                    "use a new file for storage.path"
                )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # The WAL is copied back into the file (fsync included) by `checkpoint`,
        # called after the bulk writes from their worker thread on a connection
        # of its own; left automatic, that copy would run inside whichever
        # commit crossed the threshold, a decision's on the event loop included.
        # The automatic one stays as a backstop for a caller that never checkpoints.
        db.execute(f"PRAGMA wal_autocheckpoint = {_AUTOCHECKPOINT_PAGES}")
        db.execute("PRAGMA foreign_keys=ON")
        with self._tx():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            # the threshold the minute rows' peak counts were made with, for readers
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('peak_threshold_db', ?)",
                (str(self.peak_threshold_db),),
            )
            if self.timezone is not None:
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('timezone', ?)",
                    (self.timezone,),
                )
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        """Write what is held in memory and close; the object cannot be used afterwards."""
        self.flush()
        with self._checkpoint_lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
        with self._lock:
            self._db.close()
        self._unlock()

    def checkpoint(self) -> None:
        """Copy the WAL into the database file, without holding up the other calls.

        It runs on a connection of its own and in SQLite's PASSIVE mode, so
        commits (a decision's above all) go on meanwhile; call it from a worker
        thread after bulk writes.  What it cannot copy yet waits for the next one.
        """
        if self.read_only:
            return
        with self._checkpoint_lock:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(
                    str(self.path), check_same_thread=False, isolation_level=None, timeout=10.0
                )
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ levels

    def add_levels(self, records: Iterable[LevelRecord]) -> int:
        """Fold a batch of interval records into the minute rows; return how many were folded.

        Rows are kept in memory while their minute is the newest seen and
        written (added to what is stored) once a later minute starts, so 10,000
        sensors cost one write of 10,000 rows a minute, not a second.  A late
        record for an older minute is simply added to its stored row.  A crash
        loses at most the current minute; `close` and `flush` write everything.
        Records with levels outside `policy.PLAUSIBLE_DB`, times outside 1970-2096, or
        NaN anywhere are skipped (ingest should have refused them).

        `fold_levels` and `write_minutes` are its two halves, for a caller that
        folds on one thread and writes on another.
        """
        count = self.fold_levels(records)
        if self.minutes_due():
            self.write_minutes()
        return count

    def fold_levels(self, records: Iterable[LevelRecord]) -> int:
        """Fold records into the minute rows held in memory (no disk); return how many."""
        threshold = self.peak_threshold_db
        count = 0
        with self._fold_lock:
            acc = self._pending
            per_minute = self._pending_minutes
            newest = self._newest_minute
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
            self._newest_minute = newest
        return count

    def minutes_due(self) -> bool:
        """Whether minute rows wait to be written: a later minute has started, or too many."""
        with self._fold_lock:
            return bool(self._pending_minutes) and (
                min(self._pending_minutes) < self._newest_minute
                or len(self._pending) > _MAX_PENDING
            )

    def flush(self) -> None:
        """Write the minute rows still held in memory."""
        self.write_minutes(everything=True)

    def write_minutes(self, *, everything: bool = False, chunk: int | None = None) -> int:
        """Write the minute rows of the minutes that are over (all of them if `everything`,
        or if more than the memory bound wait); return how many rows were written.

        The rows go in transactions of `chunk` rows (`MINUTE_CHUNK`), the database
        lock released in between: a decision being recorded meanwhile waits for
        one chunk (a few ms), not for a minute of 10,000 sensors (~100 ms).  Each
        chunk leaves memory when it is taken and comes back (added to what was
        folded meanwhile) if its transaction fails, so no record is lost.
        """
        size = chunk or MINUTE_CHUNK
        written = 0
        with self._write_lock:  # one writer: chunks of the same minute never race
            with self._fold_lock:
                newest = self._newest_minute
                if everything or len(self._pending) > _MAX_PENDING:
                    keys = list(self._pending)
                else:
                    keys = [k for k in self._pending if k[1] < newest]
            for i in range(0, len(keys), size):
                taken = self._take(keys[i : i + size])
                try:
                    self._write_rows(taken)
                except BaseException:
                    self._put_back(taken)
                    raise
                written += len(taken)
        if written:
            self.checkpoint()
        return written

    def _take(self, keys: Sequence[tuple[str, int]]) -> list[tuple[Any, ...]]:
        rows = []
        with self._fold_lock:
            per_minute = self._pending_minutes
            for key in keys:
                v = self._pending.pop(key, None)
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

    def _put_back(self, rows: Sequence[tuple[Any, ...]]) -> None:
        # a failed write: the rows join whatever was folded into their minute since
        with self._fold_lock:
            for s, m, n, dur, ea, ec, fmax, peaks, cal in rows:
                row = self._pending.get((s, m))
                if row is None:
                    row = self._pending[(s, m)] = [0, 0.0, 0.0, 0.0, -math.inf, 0, 0]
                    self._pending_minutes[m] = self._pending_minutes.get(m, 0) + 1
                row[0] += n
                row[1] += dur
                row[2] += ea
                row[3] += ec
                row[4] = max(row[4], fmax)
                row[5] += peaks
                row[6] += cal

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
        rows = [
            (
                r.sensor,
                r.seq,
                r.t0,
                r.t1,
                r.laeq,
                r.lafmax,
                r.lamin,
                r.l10,
                r.l50,
                r.l90,
                r.lceq,
                r.peaks,
            )
            for r in records
        ]
        for i in range(0, len(rows), MINUTE_CHUNK):
            with self._tx() as db:
                db.executemany(
                    "INSERT OR REPLACE INTO summaries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows[i : i + MINUTE_CHUNK],
                )
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
                    s,
                    m,
                    n,
                    dur,
                    10 * math.log10(ea / dur),
                    10 * math.log10(ec / dur),
                    fmax,
                    peaks,
                    cal,
                )
            )
        return out

    # ------------------------------------------------------------ decisions

    def record_decision(self, decision: Decision, at: float) -> None:
        """Log a policy decision with its evidence; nudges and controls also become episodes."""
        data = json.dumps(asdict(decision), sort_keys=True, default=_json_default)
        zone = decision.zone
        episode = _episode_of(decision)
        with self._tx() as db:
            db.execute(
                "INSERT INTO decisions (at, zone, type, episode, data) VALUES (?, ?, ?, ?, ?)",
                (at, zone, type(decision).__name__, episode, data),
            )
            if isinstance(decision, Nudge | Control):
                db.execute(
                    """INSERT OR IGNORE INTO episodes
                           (id, zone, at, control, kind, laeq, sensors, evidence)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                    (
                        episode,
                        zone,
                        decision.at,
                        isinstance(decision, Control),
                        decision.kind,
                        decision.laeq,
                        json.dumps(list(decision.sensors)),
                        json.dumps(dict(decision.evidence), sort_keys=True),
                    ),
                )
            elif isinstance(decision, EpisodeEnded):
                db.execute(
                    "UPDATE episodes SET ended_at = ?, end_reason = ? WHERE id = ?",
                    (decision.at, decision.reason, decision.episode),
                )

    def recent_decisions(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest decisions, newest first, as JSON-ready dicts with a "type" key."""
        rows = self._read(
            "SELECT type, data FROM decisions ORDER BY id DESC LIMIT ?", (max(0, limit),)
        )
        return [{"type": t, **json.loads(d)} for t, d in rows]

    def has_nudge(self, nudge_id: str) -> bool:
        """Whether this nudge (or control) id is already recorded: a restart must not repeat it."""
        return bool(self._read("SELECT 1 FROM episodes WHERE id = ?", (nudge_id,)))

    def episodes(self, since: float | None = None, zone: str | None = None) -> list[EpisodeRow]:
        """Stored nudges and controls, oldest first, optionally from `since` and for one zone."""
        sql = (
            "SELECT id, zone, at, control, kind, laeq, sensors, ended_at, end_reason FROM episodes"
        )
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        if zone is not None:
            where.append("zone = ?")
            params.append(zone)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._read(sql + " ORDER BY at, id", params)
        return [
            EpisodeRow(i, z, at, bool(c), k, laeq, tuple(json.loads(s)), e, r)
            for i, z, at, c, k, laeq, s, e, r in rows
        ]

    # ------------------------------------------------------------ light commands

    def record_override_sent(
        self, command: Override | Release, sent_at: float | None = None
    ) -> None:
        """Record a light command as sent (a `Release` is stored with level NULL)."""
        level = command.level if isinstance(command, Override) else None
        ramp = command.ramp_s if isinstance(command, Override) else None
        expires = command.expires_at if isinstance(command, Override) else None
        evidence = dict(command.evidence) if isinstance(command, Override) else {}
        with self._tx() as db:
            db.execute(
                """INSERT OR REPLACE INTO commands
                       (cmd_id, zone, grp, level, ramp_s, expires_at, reason, episode, evidence,
                        sent_at, acked_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)""",
                (
                    command.cmd_id,
                    command.zone,
                    command.group,
                    level,
                    ramp,
                    expires,
                    command.reason,
                    command.episode,
                    json.dumps(evidence, sort_keys=True),
                    command.at if sent_at is None else sent_at,
                ),
            )

    def record_override_acked(self, cmd_id: str, at: float) -> bool:
        """Mark a command acknowledged by the lights (first ack wins); False if unknown."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE commands SET acked_at = coalesce(acked_at, ?) WHERE cmd_id = ?",
                (at, cmd_id),
            )
            return cur.rowcount > 0

    def active_overrides(self, now: float) -> list[Override]:
        """Overrides still in force at `now`: per light group, the latest command if it is an
        override whose expiry is ahead.  After a restart these are the ones to release."""
        rows = self._read(
            """SELECT c.cmd_id, c.zone, c.grp, c.level, c.ramp_s, c.expires_at, c.reason,
                      c.episode, c.evidence, c.sent_at
               FROM commands c
               WHERE c.sent_at = (SELECT max(sent_at) FROM commands d WHERE d.grp = c.grp)
                 AND c.level IS NOT NULL AND c.expires_at > ?
               ORDER BY c.grp""",
            (now,),
        )
        return [
            Override(zone, grp, cmd, level, ramp, exp, reason, json.loads(ev), sent, episode)
            for cmd, zone, grp, level, ramp, exp, reason, episode, ev, sent in rows
        ]

    # ------------------------------------------------------------ notifications

    def record_notification(
        self, nudge_id: str, channel: str, target: str, at: float, ok: bool = True, detail: str = ""
    ) -> None:
        """Record one delivery attempt of a nudge (`channel` e.g. "mqtt" or "webpush")."""
        with self._tx() as db:
            db.execute(
                """INSERT INTO notifications (nudge_id, channel, target, at, ok, detail)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                (nudge_id, channel, target, at, ok, detail),
            )

    def has_notification(self, nudge_id: str, channel: str, target: str | None = None) -> bool:
        """Whether the nudge was already delivered successfully on `channel` (to `target`)."""
        sql = "SELECT 1 FROM notifications WHERE nudge_id = ? AND channel = ? AND ok"
        params: list[Any] = [nudge_id, channel]
        if target is not None:
            sql += " AND target = ?"
            params.append(target)
        return bool(self._read(sql + " LIMIT 1", params))

    # ------------------------------------------------------------ subscriptions

    def add_subscription(
        self,
        endpoint: str,
        keys: Mapping[str, str],
        zones: Sequence[str],
        created: float,
        *,
        limit: int | None = None,
    ) -> bool:
        """Add or replace a Web Push subscription for `zones`; False (nothing stored) if it
        is new and `limit` subscriptions are stored already."""
        with self._tx() as db:
            if limit is not None:
                known = db.execute(
                    "SELECT 1 FROM subscriptions WHERE endpoint = ?", (endpoint,)
                ).fetchone()
                if known is None:
                    (count,) = db.execute("SELECT count(*) FROM subscriptions").fetchone()
                    if count >= limit:
                        return False
            db.execute("DELETE FROM subscriptions WHERE endpoint = ?", (endpoint,))
            db.execute(
                "INSERT INTO subscriptions (endpoint, keys, created) VALUES (?, ?, ?)",
                (endpoint, json.dumps(dict(keys), sort_keys=True), created),
            )
            db.executemany(
                "INSERT OR IGNORE INTO subscription_zones (endpoint, zone) VALUES (?, ?)",
                [(endpoint, z) for z in zones],
            )
        return True

    def remove_subscription(self, endpoint: str) -> bool:
        """Remove a subscription; False if there was none."""
        with self._tx() as db:
            return (
                db.execute("DELETE FROM subscriptions WHERE endpoint = ?", (endpoint,)).rowcount > 0
            )

    def subscriptions_for_zone(self, zone: str) -> list[Subscription]:
        """Subscriptions that asked for `zone`."""
        rows = self._read(
            """SELECT s.endpoint FROM subscription_zones z JOIN subscriptions s USING (endpoint)
               WHERE z.zone = ? ORDER BY s.created, s.endpoint""",
            (zone,),
        )
        return [sub for (endpoint,) in rows if (sub := self.subscription(endpoint)) is not None]

    def subscription(self, endpoint: str) -> Subscription | None:
        """One subscription by endpoint, or None."""
        rows = self._read(
            "SELECT keys, created, last_push_at FROM subscriptions WHERE endpoint = ?", (endpoint,)
        )
        if not rows:
            return None
        keys, created, last = rows[0]
        zones = self._read(
            "SELECT zone FROM subscription_zones WHERE endpoint = ? ORDER BY zone", (endpoint,)
        )
        return Subscription(endpoint, json.loads(keys), tuple(z for (z,) in zones), created, last)

    def mark_pushed(self, endpoint: str, at: float) -> None:
        """Remember when a subscriber was last pushed to (for the per-subscriber rate limit)."""
        with self._tx() as db:
            db.execute(
                "UPDATE subscriptions SET last_push_at = ? WHERE endpoint = ?", (at, endpoint)
            )

    # ------------------------------------------------------------ policy state

    def save_state(self, state: PolicyState, at: float) -> None:
        """Save the policy state (one row, replaced each time).

        The sensors' sliding windows are not saved (see `policy.state_to_json`):
        after a restart a zone triggers again on fresh records only.
        """
        self.save_state_text(state_to_json(state, windows=False), at)

    def save_state_text(self, text: str, at: float) -> None:
        """`save_state` for a state already serialised (``state_to_json(..., windows=False)``)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO policy_state (id, saved_at, json) VALUES (1, ?, ?)",
                (at, text),
            )
        self.checkpoint()  # the state is the bulk of what the WAL holds

    def load_state(self, config: SiteConfig) -> PolicyState | None:
        """The saved policy state adapted to `config`, or None if none was saved.

        Raises `StateError` if the saved state is damaged; the caller may start fresh.
        """
        rows = self._read("SELECT json FROM policy_state WHERE id = 1")
        if not rows:
            return None
        try:
            return state_from_json(rows[0][0], config)
        except StateError as exc:
            raise StateError(f"{self.path}: {exc}") from exc

    # ------------------------------------------------------------ retention

    def prune(self, before: float) -> int:
        """Delete levels, decisions, episodes, commands and notifications older than `before`
        (UTC epoch s); return the number of rows deleted.  Subscriptions and the policy state
        are kept.  Call it now and then with ``now - storage.retention_days``."""
        self.flush()
        deleted = 0
        with self._tx() as db:
            for sql in (
                "DELETE FROM levels_minute WHERE minute < ?",
                "DELETE FROM summaries WHERE t0 < ?",
                "DELETE FROM decisions WHERE at < ?",
                "DELETE FROM episodes WHERE at < ?",
                "DELETE FROM commands WHERE sent_at < ? AND coalesce(expires_at, 0) < ?",
                "DELETE FROM notifications WHERE at < ?",
            ):
                params = (before,) * sql.count("?")
                deleted += db.execute(sql, params).rowcount
        return deleted

    # ------------------------------------------------------------ rejects

    def add_rejects(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Add to the counters of rejected input, keyed by (sensor or "?", reason)."""
        if counts:
            with self._tx() as db:
                db.executemany(
                    """INSERT INTO rejects (sensor, reason, count) VALUES (?, ?, ?)
                       ON CONFLICT (sensor, reason) DO UPDATE SET count = count + excluded.count""",
                    [(s, r, n) for (s, r), n in counts.items()],
                )

    def rejects(self) -> dict[tuple[str, str], int]:
        """All reject counters."""
        return {(s, r): n for s, r, n in self._read("SELECT sensor, reason, count FROM rejects")}


def _hold_lock(path: Path) -> TextIO:
    """Hold an exclusive lock on `path` + ".lock" until the returned file is closed."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        f = lock_path.open("a+", encoding="utf-8")
    except OSError as exc:
        raise StorageError(
            f"{lock_path}: cannot open the database's lock file ({exc.strerror}); check that "
            "the directory exists and is writable, or set storage.path"
        ) from exc
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip()[:200] or "another process"
        f.close()
        raise StorageError(
            f"{path} is in use by another gateway ({holder}, per {lock_path.name}); one gateway "
            "writes one database: stop the other one first, or give this one its own "
            "storage.path (and its own broker.client_id)"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    f.flush()
    return f


def _episode_of(decision: Decision) -> str | None:
    if isinstance(decision, Nudge):
        return decision.nudge_id
    if isinstance(decision, Control):
        return decision.control_id
    if isinstance(decision, Override | Release | EpisodeEnded):
        return decision.episode
    return None


def _json_default(value: object) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot store {type(value).__name__} as JSON")
