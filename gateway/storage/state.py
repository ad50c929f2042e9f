"""The policy state, one row replaced at each save, so a restarted gateway goes on."""

from __future__ import annotations

from gateway.config import SiteConfig
from gateway.errors import StateError
from gateway.policy import PolicyState, state_from_json, state_to_json
from gateway.storage.database import Database

__all__ = ["StateStore"]


class StateStore(Database):
    """The saved policy state of a `Database`."""

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
                "INSERT OR REPLACE INTO policy_state (id, saved_at, json) VALUES (?, ?, ?)",
                (self.state_id, at, text),
            )
        self.checkpoint()  # the state is the bulk of what the WAL holds

    def load_state(self, config: SiteConfig) -> PolicyState | None:
        """The saved policy state adapted to `config`, or None if none was saved.

        Raises `StateError` if the saved state is damaged; the caller may start fresh.
        """
        rows = self._read("SELECT json FROM policy_state WHERE id = ?", (self.state_id,))
        if not rows:
            return None
        try:
            return state_from_json(rows[0][0], config)
        except StateError as exc:
            raise StateError(f"{self.where}: {exc}") from exc
