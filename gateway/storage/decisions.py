"""Decisions of the policy with their evidence, the episodes they make, the light commands.

Every decision is logged; a nudge or a control also becomes an episode (for
the evaluation report), which its `EpisodeEnded` closes.  Light commands are
stored as sent and as acknowledged, so that after a restart the overrides
still in force can be released.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from gateway.policy import Control, Decision, EpisodeEnded, Nudge, Override, Release
from gateway.storage.database import Database

__all__ = ["DecisionStore", "EpisodeRow"]


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


class DecisionStore(Database):
    """The decisions, episodes and light commands of a `Database`."""

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
            EpisodeRow(
                id=i,
                zone=z,
                at=at,
                control=bool(c),
                kind=k,
                laeq=laeq,
                sensors=tuple(json.loads(s)),
                ended_at=e,
                end_reason=r,
            )
            for i, z, at, c, k, laeq, s, e, r in rows
        ]

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
            Override(
                zone=zone,
                group=grp,
                cmd_id=cmd,
                level=level,
                ramp_s=ramp,
                expires_at=exp,
                reason=reason,
                evidence=json.loads(ev),
                at=sent,
                episode=episode,
            )
            for cmd, zone, grp, level, ramp, exp, reason, episode, ev, sent in rows
        ]


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
