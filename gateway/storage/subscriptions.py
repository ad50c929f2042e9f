"""Residents: Web Push subscriptions per zone, and every delivery attempt of a nudge."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.storage.database import Database

__all__ = ["Subscription", "SubscriptionStore"]


@dataclass(frozen=True)
class Subscription:
    """A resident's Web Push subscription."""

    endpoint: str
    keys: Mapping[str, str]
    zones: tuple[str, ...]
    created: float
    last_push_at: float | None


class SubscriptionStore(Database):
    """The subscriptions and notifications of a `Database`."""

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
        return Subscription(
            endpoint=endpoint,
            keys=json.loads(keys),
            zones=tuple(z for (z,) in zones),
            created=created,
            last_push_at=last,
        )

    def mark_pushed(self, endpoint: str, at: float) -> None:
        """Remember when a subscriber was last pushed to (for the per-subscriber rate limit)."""
        with self._tx() as db:
            db.execute(
                "UPDATE subscriptions SET last_push_at = ? WHERE endpoint = ?", (at, endpoint)
            )

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
