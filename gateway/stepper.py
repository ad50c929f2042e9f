"""The policy state of a running gateway and the one way it changes: a policy step."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.config import SiteConfig
from gateway.events import Event
from gateway.policy import (
    Decision,
    Override,
    PolicyState,
    Release,
    initial_state,
    release_all,
    release_unowned,
    step,
)

__all__ = ["Stepper"]


class Stepper:
    """Holds the current `PolicyState`; every task that moves the policy on goes through here.

    The state is immutable and replaced whole, so a reader (a save, the HTTP
    API) that took `state` keeps a consistent picture while steps go on.
    """

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.state: PolicyState = initial_state(config)

    def step(self, event: Event, now: float, out: list[Decision]) -> None:
        self.state, decisions = step(self.config, self.state, event, now)
        if decisions:
            out.extend(decisions)

    def release_all(self, reason: str, now: float) -> list[Decision]:
        self.state, decisions = release_all(self.config, self.state, reason, now)
        return decisions

    def release_unowned(self, in_force: Iterable[Override], now: float) -> list[Release]:
        return release_unowned(self.state, in_force, now)
