"""What the gateway remembers, in one SQLite file, one module per aggregate.

- `database`: the file, its schema and version, the connection and its
  lock, checkpoints, the lock file that keeps a second gateway out;
- `minutes` and `levels`: the 1 s level records folded in memory into one
  row per sensor and minute, written whole once the minute is over and every
  few seconds while it lasts (of two versions of a row the store keeps the one
  holding more records); the sensors' own minute summaries;
- `decisions`: the policy's decisions with their evidence, the episodes
  (nudges and controls) for the evaluation report, the light commands sent
  and acknowledged;
- `subscriptions`: residents' Web Push subscriptions and every delivery
  attempt of a nudge;
- `state`: the policy state, for restarts.

`Storage` is all of them on one file.  It may be called from any thread (the
service writes levels and the policy state from worker threads, and records
decisions on its event loop, where a short transaction costs less than a
thread hop): one lock serialises the calls on the connection, the minute
rows are folded under a lock of their own, and bulk writes go in short
transactions, so recording a decision never waits for more than one of them.
"""

from __future__ import annotations

from gateway.events import SummaryRecord
from gateway.storage.database import SCHEMA_VERSION
from gateway.storage.decisions import DecisionStore, EpisodeRow
from gateway.storage.levels import MINUTE_CHUNK, LevelStore, MinuteRow
from gateway.storage.state import StateStore
from gateway.storage.subscriptions import Subscription, SubscriptionStore

__all__ = [
    "MINUTE_CHUNK",
    "SCHEMA_VERSION",
    "EpisodeRow",
    "MinuteRow",
    "Storage",
    "Subscription",
    "SummaryRecord",
]


class Storage(LevelStore, DecisionStore, SubscriptionStore, StateStore):
    """The gateway's SQLite database; see the package docstring for what lives where."""

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
