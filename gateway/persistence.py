"""What the gateway writes in the background: minute rows, minute summaries, policy state."""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.clock import Clock
from gateway.dispatch import STORAGE_ERRORS
from gateway.events import SummaryRecord
from gateway.metrics import Metrics
from gateway.policy import state_json_parts
from gateway.stepper import Stepper
from gateway.storage import Storage

__all__ = ["Persistence"]

log = logging.getLogger("hushlight.gateway")

# minutes that are over (the newest every `storage.levels.EARLY_WRITE_S`), takeovers' rows
# and the sensors' summaries are written this often
STORE_EVERY_WALL_S = 1.0
# After a save that took d seconds, the next waits SAVE_GAP_FACTOR * d: a small
# site saves after every decision, a huge one (the state of 10,000 sensors takes
# ~0.5 s to serialise) at most every few seconds and never spends more than
# 1 / (1 + SAVE_GAP_FACTOR) of its time saving.  Nudges are still never sent
# twice: their ids are deterministic and checked against storage before sending.
SAVE_GAP_FACTOR = 10.0
SAVE_SLICE_S = 0.002  # at most this long serialising the state per event-loop turn


class Persistence:
    """Two tasks: `store` writes minutes once they are over and the sensors' summaries,
    `save` saves the policy state when asked (`want_save`), spaced in proportion to
    what a save costs; `close` writes what is left."""

    def __init__(self, storage: Storage, stepper: Stepper, clock: Clock, metrics: Metrics) -> None:
        self.storage = storage
        self.stepper = stepper
        self.clock = clock
        self.metrics = metrics
        self.last_save = 0.0  # monotonic end of the last state save
        self._save_wanted = asyncio.Event()
        self._summaries: list[SummaryRecord] = []  # sensors' minute summaries not yet stored

    def want_save(self) -> None:
        self._save_wanted.set()

    def summary(self, record: SummaryRecord) -> None:
        self._summaries.append(record)

    async def store(self) -> None:
        """Write the minutes that are over, and the sensors' minute summaries, once a second."""
        while True:
            await asyncio.sleep(STORE_EVERY_WALL_S)
            summaries, self._summaries = self._summaries, []
            try:
                if self.storage.minutes_due():
                    # a minute is over: its rows go to disk in short transactions
                    await asyncio.to_thread(self.storage.write_minutes)
            except STORAGE_ERRORS as exc:
                self.metrics.storage_errors.inc("levels")
                log.error("could not write the minute levels: %s", exc)
            try:
                if summaries:
                    await asyncio.to_thread(self.storage.add_summaries, summaries)
            except asyncio.CancelledError:
                self._summaries[:0] = summaries  # stopping: kept for the final flush
                raise
            except STORAGE_ERRORS as exc:
                self.metrics.storage_errors.inc("summaries")
                log.error("could not store %d minute summaries: %s", len(summaries), exc)

    async def save(self) -> None:
        """Save the policy state when asked, spaced out in proportion to what a save costs."""
        gap = 0.0
        while True:
            await self._save_wanted.wait()
            wait = self.last_save + gap - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._save_wanted.clear()
            began = time.monotonic()
            try:
                text = await self._state_text()
                await asyncio.to_thread(self.storage.save_state_text, text, self.clock.now())
            except STORAGE_ERRORS as exc:
                self.metrics.storage_errors.inc("state")
                log.error("could not save the policy state: %s", exc)
            self.last_save = time.monotonic()
            gap = SAVE_GAP_FACTOR * (self.last_save - began)

    async def _state_text(self) -> str:
        """The policy state's JSON, built a slice of `SAVE_SLICE_S` per event-loop turn.

        Its serialisation keeps the GIL (in a thread it would stall the loop just
        the same): for 10,000 sensors that is tens of milliseconds during which
        no message would be read and no override sent.  The state is immutable,
        so the slices all describe the moment the save began.
        """
        parts: list[str] = []
        turn = time.perf_counter()
        for part in state_json_parts(self.stepper.state, windows=False):
            parts.append(part)
            if time.perf_counter() - turn >= SAVE_SLICE_S:
                await asyncio.sleep(0)
                turn = time.perf_counter()
        return "".join(parts)

    def close(self) -> None:
        """At the end of the gateway: the summaries left, the policy state, then the
        storage (whose `close` writes the minute rows held in memory)."""
        summaries, self._summaries = self._summaries, []
        if summaries:
            self.storage.add_summaries(summaries)
        self.storage.save_state(self.stepper.state, self.clock.now())
        self.storage.close()
