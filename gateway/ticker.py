"""The policy clock: hold ends, renewals and silent sensors happen without any message."""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.clock import Clock
from gateway.collector import Collector
from gateway.config import SiteConfig
from gateway.dispatch import Dispatcher
from gateway.events import Tick
from gateway.ingest import Ingest
from gateway.metrics import Metrics
from gateway.persistence import Persistence
from gateway.policy import Decision, explain
from gateway.stepper import Stepper

__all__ = ["Ticker"]

log = logging.getLogger("hushlight.gateway")

TICK_WALL_S = 0.25  # the policy clock advances at least this often (wall seconds)
SAVE_EVERY_WALL_S = 5.0  # policy state saved this often even without decisions
EXPLAIN_EVERY_WALL_S = 10.0  # with `explain`, each zone's state is logged this often


class Ticker:
    """`run()` until cancelled: each tick sweeps the sensors gone silent, steps the policy
    with a `Tick`, carries out what it decides and runs a full collection when one is due.

    `explain`: log every `EXPLAIN_EVERY_WALL_S` what each zone is doing and why it
    is not nudging (the trigger's rule against each sensor's window, the schedule,
    the cooldown).
    """

    def __init__(
        self,
        config: SiteConfig,
        clock: Clock,
        ingest: Ingest,
        stepper: Stepper,
        dispatcher: Dispatcher,
        persistence: Persistence,
        collector: Collector,
        metrics: Metrics,
        *,
        explain: bool = False,
    ) -> None:
        self.config = config
        self.clock = clock
        self.ingest = ingest
        self.stepper = stepper
        self.dispatcher = dispatcher
        self.persistence = persistence
        self.collector = collector
        self.metrics = metrics
        self.explain = explain
        self._explain_next = 0.0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(min(TICK_WALL_S, self.clock.wall(1.0)))
            now = self.clock.now()
            decisions: list[Decision] = []
            try:
                for event in self.ingest.sweep(now):
                    self.stepper.step(event, now, decisions)
                self.stepper.step(Tick(now), now, decisions)
                self.collector.maybe_full()  # here: the tick is the one periodic task
                if self.explain and time.monotonic() >= self._explain_next:
                    self._explain_next = time.monotonic() + EXPLAIN_EVERY_WALL_S
                    state = self.stepper.state
                    for zone in self.config.zones:
                        log.info("%s", explain(self.config, state, zone.id, now))
            except Exception as exc:  # a bug must cost one tick, not the gateway
                self.metrics.worker_errors.inc(type(exc).__name__)
                log.exception("the policy tick failed")
            if decisions:
                await self.dispatcher.carry_out(decisions)
            elif time.monotonic() - self.persistence.last_save >= SAVE_EVERY_WALL_S:
                self.persistence.want_save()
