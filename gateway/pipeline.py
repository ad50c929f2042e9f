"""The ingest pipeline: a batch from the queue -> ingest -> policy step -> carry out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from gateway.collector import Collector
from gateway.dispatch import STORAGE_ERRORS, Dispatcher
from gateway.events import LevelEvent, LightStateEvent, SummaryRecord
from gateway.ingest import Ingest
from gateway.link import Item
from gateway.metrics import Metrics
from gateway.persistence import Persistence
from gateway.policy import Decision
from gateway.stepper import Stepper
from gateway.storage import Storage

if TYPE_CHECKING:
    from gateway.sensorconfig import ConfigDelivery

__all__ = ["BATCH_MAX", "SEND_TURNS", "Pipeline"]

log = logging.getLogger("hushlight.gateway")

# Messages handled per turn of the ingest task (~10-20 ms of work): between turns
# the event loop reads the socket and sends PUBACKs, so a long batch would hold
# back the broker (it keeps only so many unacknowledged messages in flight).
BATCH_MAX = 200  # keep above what one MQTT read brings (paho_io.READ_SIZE: ~110 records)
SEND_TURNS = 3  # event-loop turns from a decision to its message on the socket


class Pipeline:
    """Drains the queue a turn of at most `BATCH_MAX` messages at a time; `run()` until
    cancelled, `drain()` to handle what is queued (stopping)."""

    def __init__(
        self,
        queue: asyncio.Queue[Item],
        ingest: Ingest,
        stepper: Stepper,
        dispatcher: Dispatcher,
        storage: Storage,
        persistence: Persistence,
        collector: Collector,
        metrics: Metrics,
        configs: ConfigDelivery | None = None,
    ) -> None:
        """`configs`: sees each sensor status, to send the sensor its config ([sensor_config])."""
        self.queue = queue
        self.ingest = ingest
        self.stepper = stepper
        self.dispatcher = dispatcher
        self.storage = storage
        self.persistence = persistence
        self.collector = collector
        self.metrics = metrics
        self.configs = configs
        self._idle = asyncio.Event()  # the ingest task waits for the queue
        self._idle.set()

    async def run(self) -> None:
        while True:
            self._idle.set()
            first = await self.queue.get()
            self._idle.clear()
            batch = [first, *self._take_batch()]
            await self._handle(batch)
            self.collector.young()
            if not self.queue.empty():
                await asyncio.sleep(0)  # `get` would not yield while the queue has items

    async def drain(self) -> None:
        """Handle what is queued, and let the ingest task end the turn it is in: when this
        returns, every message taken from the queue has been handled."""
        while True:
            while not self._idle.is_set():
                await self._idle.wait()  # woken, it may be busy again: look again
            if self.queue.empty():
                return
            await self._handle(self._take_batch())

    def _take_batch(self) -> list[Item]:
        queue = self.queue
        batch = []
        for _ in range(min(BATCH_MAX, queue.qsize())):
            batch.append(queue.get_nowait())
        return batch

    async def _handle(self, batch: Sequence[Item]) -> None:
        levels: list[LevelEvent] = []
        decisions: list[Decision] = []
        acks: list[tuple[str, float]] = []  # (cmd_id, at) the lights confirmed
        handle = self.ingest.handle
        step = self.stepper.step
        config_status = None
        config_topics: Mapping[str, object] = {}
        if self.configs is not None:
            config_status = self.configs.status
            config_topics = self.configs.by_status_topic
        try:
            for topic, payload, at in batch:
                try:
                    if topic in config_topics and config_status is not None:
                        config_status(topic, payload)
                    for accepted in handle(topic, payload, at):
                        event = accepted.event
                        if isinstance(event, SummaryRecord):
                            self.persistence.summary(event)
                            continue
                        if isinstance(event, LevelEvent):
                            levels.append(event)
                            if not accepted.live:
                                continue
                        elif isinstance(event, LightStateEvent):
                            self.dispatcher.acked(event, acks)
                        step(event, at, decisions)
                except Exception as exc:  # a bug must cost one message, not the gateway
                    self.metrics.worker_errors.inc(type(exc).__name__)
                    log.exception("handling a message on %s failed", topic[:120])
                if decisions:
                    # at once, not after the rest of the batch (up to ~15 ms of work)
                    await self.dispatcher.carry_out(decisions)
                    decisions = []
                    # and on the wire before the rest of the batch: the outbox's pump
                    # starts the publish, paho queues the packet and asks for the
                    # writer, the writer sends, one event-loop turn each
                    for _ in range(SEND_TURNS):
                        await asyncio.sleep(0)
        finally:
            # also when stopping mid-turn: the records accepted are never lost
            if levels:
                self._fold(levels)
        if acks:
            try:
                await asyncio.to_thread(self.dispatcher.record_acks, acks)
            except STORAGE_ERRORS as exc:
                self.metrics.storage_errors.inc("acks")
                log.error("could not record %d acknowledgements: %s", len(acks), exc)

    def _fold(self, levels: Sequence[LevelEvent]) -> None:
        """Fold a turn's accepted records into the minute rows held in memory.

        At once, a turn (at most `BATCH_MAX` records, well under a millisecond)
        at a time: a record kept waiting for a later fold outlives the
        collector's youngest generation, and at 10,000 sensors' worth a second
        its older generations' collections become long, frequent pauses.
        """
        try:
            self.storage.fold_levels(levels)
        except Exception as exc:  # in memory only; a bug must cost the records, not the gateway
            self.metrics.storage_errors.inc("levels")
            log.error("could not fold %d level records: %s", len(levels), exc)
