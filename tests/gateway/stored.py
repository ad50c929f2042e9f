"""What the tests do with a `Storage` beside its API: fold levels as the service does, read SQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.events import LevelEvent
from gateway.storage import Storage


def fold_and_write(db: Storage, records: Sequence[LevelEvent]) -> int:
    """Fold records and write the minutes that are over, as the service does; return how many
    records were folded."""
    count = db.fold_levels(records)
    if db.minutes_due():
        db.write_minutes()
    return count


def delivered(db: Storage, nudge_id: str, channel: str, target: str | None = None) -> bool:
    """Whether a delivery of the nudge on `channel` (to `target`) is recorded as ok."""
    sql = "SELECT 1 FROM notifications WHERE nudge_id = ? AND channel = ? AND ok"
    params = [nudge_id, channel]
    if target is not None:
        sql += " AND target = ?"
        params.append(target)
    with sqlite3.connect(db.path) as raw:
        return raw.execute(sql, params).fetchone() is not None
