"""Carrying out the policy's decisions: record them, then lights, nudges and logs."""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
from collections.abc import Callable, Sequence

from gateway.clock import Clock, iso_time
from gateway.config import SiteConfig
from gateway.errors import GatewayError
from gateway.events import LightStateEvent
from gateway.lighting import LightingAdapter
from gateway.metrics import Metrics
from gateway.notify import Notifier
from gateway.policy import (
    Control,
    Decision,
    EpisodeEnded,
    Nudge,
    Override,
    Release,
    TriggerSuppressed,
    describe_trigger,
)
from gateway.stepper import Stepper
from gateway.storage import Storage

__all__ = ["STORAGE_ERRORS", "Dispatcher"]

log = logging.getLogger("hushlight.gateway")

# What a failing disk or database looks like: counted and logged, never fatal.
STORAGE_ERRORS = (sqlite3.Error, GatewayError, OSError)
SENT_MAX = 10_000  # override ids remembered until the lights acknowledge them


class Dispatcher:
    """Records each batch of decisions, then carries them out one by one.

    Decisions are recorded *before* anything is sent, so a crash in between
    loses a nudge rather than sending it twice; and since nudge ids are
    deterministic, a trigger replayed from an older saved state finds its id
    in storage and is not notified again.
    """

    def __init__(
        self,
        config: SiteConfig,
        clock: Clock,
        storage: Storage,
        lighting: LightingAdapter,
        notifier: Notifier,
        metrics: Metrics,
        stepper: Stepper,
        on_recorded: Callable[[], None],
        holds: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.storage = storage
        self.lighting = lighting
        self.notifier = notifier
        self.metrics = metrics
        self.stepper = stepper
        self.on_recorded = on_recorded  # the policy state changed: it wants saving
        # gateways sharing a city: whether this one holds a zone's lease now; the
        # decisions of other zones are their owner's to record and carry out
        self.holds = holds
        self.unheld = 0  # decisions dropped because their zone was not held
        self._sent: collections.OrderedDict[str, str] = collections.OrderedDict()  # cmd -> group

    async def carry_out(self, decisions: Sequence[Decision]) -> None:
        if self.holds is not None:
            held = [d for d in decisions if self.holds(d.zone)]
            self.unheld += len(decisions) - len(held)
            decisions = held
            if not decisions:
                return
        now = self.clock.now()
        # SQLite: on the event loop, not in a worker thread: a few short transactions
        # (well under a millisecond; the bulk writes leave the database lock
        # every few ms and checkpoint on a connection of their own), whereas in
        # a thread each SQLite call gives up the GIL and may wait the whole
        # switch interval to get it back from the busy event loop, per call.
        # PostgreSQL: in a thread, since each statement is a network round trip
        # and another gateway's transaction may hold a table for a while.
        try:
            if self.storage.url is None:
                replayed = self._record(decisions, now)
            else:
                replayed = await asyncio.to_thread(self._record, decisions, now)
        except STORAGE_ERRORS as exc:
            # the lights must still get their commands (a release above all);
            # what is lost is the record, and the guard against a repeat nudge
            self.metrics.storage_errors.inc("decisions")
            log.error("could not record %d decisions: %s; carrying them out", len(decisions), exc)
            replayed = set()
        self.on_recorded()
        for d in decisions:
            self.metrics.decisions.inc(type(d).__name__.lower())
            try:
                await self._act(d, replayed)
            except Exception as exc:  # one failed adapter call must not stop the gateway
                self.metrics.worker_errors.inc(type(exc).__name__)
                log.exception("carrying out %s failed", type(d).__name__)

    def _record(self, decisions: Sequence[Decision], now: float) -> set[str]:
        """Store `decisions`; return the ids of nudges stored already.

        A nudge id already stored was sent before a crash that lost the newer
        policy state: the replayed trigger must not notify again.
        """
        storage = self.storage
        replayed = {
            d.nudge_id for d in decisions if isinstance(d, Nudge) and storage.has_nudge(d.nudge_id)
        }
        for d in decisions:
            storage.record_decision(d, now)
            if isinstance(d, Override | Release):
                storage.record_override_sent(d, now)
        return replayed

    async def release(self, release: Release) -> None:
        """Send a release that is no decision of the policy's state (an override it
        lost at a restart): recorded as a command only."""
        if self.holds is not None and not self.holds(release.zone):
            self.unheld += 1
            return  # on a shared store, another gateway's command
        self.storage.record_override_sent(release, release.at)
        self._count_release(release)
        await self.lighting.release(release)

    async def _act(self, d: Decision, replayed: set[str]) -> None:
        if isinstance(d, Override):
            self._remember(d.cmd_id, d.group)
            self.metrics.overrides_sent.inc(d.group, "override")
            await self.lighting.apply(d)
            log.info(
                "override %s: %s -> %.0f%% until %s (%s)",
                d.cmd_id,
                d.group,
                d.level,
                iso_time(d.expires_at, self.config.tz),
                d.reason,
            )
        elif isinstance(d, Release):
            self._count_release(d)
            await self.lighting.release(d)
        elif isinstance(d, Nudge):
            if d.nudge_id in replayed:
                log.warning("nudge %s was sent before a restart; not again", d.nudge_id)
                return
            log.info(
                "nudge %s in %s (%s): %s",
                d.nudge_id,
                d.zone,
                d.kind,
                describe_trigger(self.config.zones_by_id[d.zone], d.evidence),
            )
            self.notifier.nudge(d)
        elif isinstance(d, Control):
            log.info(
                "control %s in %s: trigger recorded, nothing sent (%s)",
                d.control_id,
                d.zone,
                describe_trigger(self.config.zones_by_id[d.zone], d.evidence),
            )
        elif isinstance(d, TriggerSuppressed):
            log.info("zone %s: loud, but %s", d.zone, self._held_back(d))
        elif isinstance(d, EpisodeEnded):
            log.info(
                "zone %s: %s %s ended (%s)",
                d.zone,
                "control" if d.control else "nudge",
                d.episode,
                d.reason,
            )

    def _held_back(self, d: TriggerSuppressed) -> str:
        if d.why == "outside_schedule":
            zone = self.config.zones_by_id[d.zone]
            return f"outside its schedule ({', '.join(zone.schedule.texts)}): no nudge"
        if d.why == "cooldown":
            until = self.stepper.state.zones[d.zone].cooldown_until
            return f"in its cooldown until {iso_time(until, self.config.tz)}: no nudge"
        if d.why == "hourly_cap":
            return "max_nudges_per_hour reached: no nudge"
        return f"no nudge ({d.why})"

    def _count_release(self, release: Release) -> None:
        self.metrics.overrides_sent.inc(release.group, "release")
        log.info(
            "release %s: %s back to programme (%s)", release.cmd_id, release.group, release.reason
        )

    def _remember(self, cmd_id: str, group: str) -> None:
        self._sent[cmd_id] = group
        while len(self._sent) > SENT_MAX:  # bounded: unacknowledged ids age out
            self._sent.popitem(last=False)

    def acked(self, event: LightStateEvent, acks: list[tuple[str, float]]) -> None:
        """Note the lights' confirmation of an override we sent (to record in `acks`)."""
        if event.cmd_id is not None and event.source == "override":
            group = self._sent.pop(event.cmd_id, None)
            if group is not None:
                acks.append((event.cmd_id, event.at))
                self.metrics.overrides_acked.inc(group)

    def record_acks(self, acks: Sequence[tuple[str, float]]) -> None:
        # in a thread: the event loop never waits for the database lock
        for cmd_id, at in acks:
            self.storage.record_override_acked(cmd_id, at)
