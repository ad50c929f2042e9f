"""The SQLite file itself: the schema, the connection, its lock, the one-writer lock file.

The file is in WAL mode (readers such as `hushlight report` do not block the
gateway) with ``synchronous=NORMAL``: a power cut may lose the last
transaction, never corrupt the file.  The schema version lives in
``PRAGMA user_version``; a file from a newer version is refused.

One `Database` may be called from any thread: a lock serialises the calls,
so two calls never interleave on the connection.  The WAL is copied into the
file by `checkpoint` on a connection of its own, so commits go on meanwhile.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, Self, TextIO

from gateway.errors import StorageError
from gateway.storage.postgres import (
    PG_SCHEMA,
    SCHEMA_LOCK,
    PgConnection,
    is_postgres_url,
    safe_url,
)

__all__ = ["SCHEMA_VERSION", "Database"]

SCHEMA_VERSION = 1

# pages (4 KiB) in the WAL before a commit checkpoints it by itself (~64 MB); the
# gateway's own checkpoints keep it far smaller
_AUTOCHECKPOINT_PAGES = 16_000

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
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Cursor(Protocol):
    """What the stores read of a statement's result (sqlite3's cursor, or PostgreSQL's rows)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """What the stores use of a connection: SQLite's, or the `PgConnection` that takes its SQL."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Any, /) -> Cursor: ...

    def close(self) -> None: ...


class Database:
    """The connection to one hushlight SQLite file, with its transactions and checkpoints."""

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
        self.url = str(path) if is_postgres_url(path) else None
        self.path = Path(safe_url(self.url) if self.url else path)
        # where the data is, for messages: the file, or the URL without its password
        self.where = safe_url(self.url) if self.url else str(self.path)
        # the policy state's row: the one row of a SQLite file; on a store that gateways
        # share, each gateway's own (the service sets its name)
        self.state_id: int | str = "gateway" if self.url else 1
        self.peak_threshold_db = peak_threshold_db
        self.read_only = read_only
        # the site's time zone, kept for readers that show times to people (the report);
        # None when the writer did not say
        self.timezone = timezone
        self._lock = threading.Lock()  # guards `_db`
        self._checkpoint_lock = threading.Lock()
        self._checkpointer: sqlite3.Connection | None = None  # opened on first `checkpoint`
        # a sqlite3.Connection or a PgConnection: the stores use what both offer
        self._db: Connection
        if self.url is not None:
            self._lock_file = None  # leases, not a lock file, keep gateways apart here
            self._db = PgConnection(self.url)
            try:
                self._setup_postgres()
            except BaseException:
                self._db.close()
                raise
            return
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

    def _setup_postgres(self) -> None:
        db = self._db
        if not self.read_only:
            with self._tx():
                db.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
                for statement in PG_SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                found = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if found is None:
                    db.execute(
                        "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('peak_threshold_db', ?)",
                    (str(self.peak_threshold_db),),
                )
                if self.timezone is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('timezone', ?)",
                        (self.timezone,),
                    )
        if db.execute("SELECT to_regclass('meta')").fetchone()[0] is None:
            raise StorageError(
                f"{self.where}: not a hushlight database (it has no meta table); give the "
                "storage.url of the gateways' config"
            )
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{self.where}: written by a newer hushlight (schema {version}, this one reads up "
                f"to {SCHEMA_VERSION}); upgrade hushlight or use another database"
            )
        if self.read_only:
            # a reader counts peaks as the writers did
            if "peak_threshold_db" in meta:
                self.peak_threshold_db = float(meta["peak_threshold_db"])
            self.timezone = meta.get("timezone", self.timezone)

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
    def _tx(self) -> Iterator[Connection]:
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
        """Close the file; the object cannot be used afterwards."""
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
        if self.read_only or self.url is not None:
            return  # PostgreSQL keeps its own write-ahead log
        with self._checkpoint_lock:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(
                    str(self.path), check_same_thread=False, isolation_level=None, timeout=10.0
                )
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
