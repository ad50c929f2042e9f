"""Notifications: each nudge goes to the city's app backend over MQTT and to
subscribed residents by Web Push.

MQTT: one QoS 1 message on ``zones/{zone}/nudge`` per nudge, as in the contract.

Web Push (RFC 8030, 8291, 8292): the payload is encrypted for each subscriber
(aes128gcm) and signed with the site's VAPID key by pywebpush.  pywebpush
is synchronous, so each delivery runs in a worker thread and at most
`concurrency` run at once; the zone's subscribers are looked up in a thread
too; deliveries wait in a bounded queue and a full queue drops (and counts)
rather than growing without limit.  Residents are
never spammed:

- a subscriber gets at most one push per ``per_subscriber_min_interval_s``
  (remembered in storage, so a restart does not reset it);
- every push of a zone carries the same ``Topic`` header, so a phone that is
  offline receives only the newest nudge of that zone, not a backlog;
- ``TTL`` drops a nudge the push service could not deliver in time (a nudge
  about noise an hour ago is useless).

A push service answering 404 or 410 says the subscription is gone for good:
it is removed.  Other failures are counted and logged; they never stop the
gateway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pywebpush import WebPushException, webpush

from gateway.clock import Clock
from gateway.config import WebPushConfig
from gateway.lighting import Publisher
from gateway.metrics import Metrics
from gateway.policy import Nudge
from gateway.storage import Subscription
from protocol import payloads, topics

__all__ = ["Notifier", "PushJob", "SubscriberStore", "nudge_payload"]

log = logging.getLogger("hushlight.notify")

QUEUE_MAX = 10_000  # deliveries waiting; more are dropped and counted
FANOUT_MAX = 1_000  # nudges waiting for their subscribers to be looked up
GONE = (404, 410)


class SubscriberStore(Protocol):
    """The part of `gateway.storage.Storage` the notifier uses."""

    def subscriptions_for_zone(self, zone: str) -> list[Subscription]: ...

    def remove_subscription(self, endpoint: str) -> bool: ...

    def mark_pushed(self, endpoint: str, at: float) -> None: ...

    def record_notification(
        self, nudge_id: str, channel: str, target: str, at: float, ok: bool = True, detail: str = ""
    ) -> None: ...


@dataclass(frozen=True)
class PushJob:
    nudge_id: str
    zone: str
    subscription: Subscription
    body: bytes


def nudge_payload(nudge: Nudge) -> bytes:
    """The contract's nudge message (``at`` in epoch milliseconds)."""
    return payloads.encode(
        "nudge",
        {
            "nudge_id": nudge.nudge_id,
            "zone": nudge.zone,
            "at": round(nudge.at * 1000),
            "laeq": nudge.laeq,
            "kind": nudge.kind,
            "message": dict(nudge.message),
        },
    )


def push_topic(zone: str) -> str:
    # RFC 8030 5.4: at most 32 characters of the URL-safe base64 alphabet;
    # zone ids ([a-z0-9-]{1,32}) always qualify.
    return zone


class Notifier:
    def __init__(
        self,
        site: str,
        config: WebPushConfig,
        store: SubscriberStore,
        publisher: Publisher,
        metrics: Metrics,
        clock: Clock,
        *,
        concurrency: int = 4,
        send: Callable[..., Any] | None = None,
    ) -> None:
        self.site = site
        self.config = config
        self.store = store
        self.publisher = publisher
        self.metrics = metrics
        self.clock = clock
        self.concurrency = concurrency
        self._send = webpush if send is None else send
        self._queue: asyncio.Queue[PushJob] = asyncio.Queue(QUEUE_MAX)
        self._fanout: asyncio.Queue[tuple[Nudge, bytes, float]] = asyncio.Queue(FANOUT_MAX)
        self._vapid_key = str(config.vapid_private_key) if config.vapid_private_key else None

    @property
    def pending(self) -> int:
        return self._queue.qsize() + self._fanout.qsize()

    def nudge(self, nudge: Nudge) -> None:
        """Publish `nudge` on MQTT and queue its Web Push deliveries (never blocks)."""
        body = nudge_payload(nudge)
        topic = topics.nudge(self.site, nudge.zone)
        self.publisher.publish(topic, body, qos=1)
        self.metrics.nudges_published.inc(nudge.zone)
        try:
            # recorded and fanned out to Web Push in a thread (`_select`)
            self._fanout.put_nowait((nudge, body, self.clock.now()))
        except asyncio.QueueFull:
            self.metrics.push_failed.inc("queue_full")

    async def run(self) -> None:
        """Deliver queued pushes, `concurrency` at a time, until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._fan_out(), name="push-fan-out")
            for i in range(self.concurrency):
                tg.create_task(self._deliverer(), name=f"push-{i}")

    async def _fan_out(self) -> None:
        # A popular zone has thousands of subscribers: looking them up and
        # marking them is database work, done in a thread, not in the event loop.
        while True:
            nudge, body, now = await self._fanout.get()
            try:
                jobs = await asyncio.to_thread(self._select, nudge, body, now)
                for job in jobs:
                    try:
                        self._queue.put_nowait(job)
                    except asyncio.QueueFull:
                        self.metrics.push_failed.inc("queue_full")
            except Exception as exc:  # a database error costs this nudge's pushes only
                self.metrics.push_failed.inc("error")
                log.error("push fan-out of %s failed: %s", nudge.nudge_id, exc)
            finally:
                self._fanout.task_done()

    def _select(self, nudge: Nudge, body: bytes, now: float) -> list[PushJob]:
        """Record the MQTT nudge; the zone's subscribers not pushed to within the
        interval, marked as pushed now."""
        self.store.record_notification(
            nudge.nudge_id, "mqtt", topics.nudge(self.site, nudge.zone), now
        )
        if self._vapid_key is None:
            return []
        interval = self.config.per_subscriber_min_interval_s
        jobs = []
        for sub in self.store.subscriptions_for_zone(nudge.zone):
            if sub.last_push_at is not None and now - sub.last_push_at < interval:
                self.metrics.push_skipped.inc()
                continue
            # counted from the decision, not the delivery: a slow push service
            # must not let a second nudge through to the same phone
            self.store.mark_pushed(sub.endpoint, now)
            jobs.append(PushJob(nudge.nudge_id, nudge.zone, sub, body))
        return jobs

    async def _deliverer(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await asyncio.to_thread(self._deliver, job)
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every queued push was attempted (tests, shutdown)."""
        await self._fanout.join()
        await self._queue.join()

    def _deliver(self, job: PushJob) -> None:
        sub = job.subscription
        info = {"endpoint": sub.endpoint, "keys": dict(sub.keys)}
        try:
            self._send(
                subscription_info=info,
                data=job.body.decode(),
                vapid_private_key=self._vapid_key,
                vapid_claims={"sub": self.config.subject},
                ttl=self.config.ttl_s,
                headers={"Topic": push_topic(job.zone), "Urgency": "normal"},
                timeout=10.0,
            )
        except WebPushException as exc:
            status = exc.response.status_code if exc.response is not None else None
            self._record(job, False, f"HTTP {status}" if status else str(exc)[:200])
            if status in GONE:
                self.metrics.push_failed.inc("gone")
                if self.store.remove_subscription(sub.endpoint):
                    self.metrics.subscriptions_removed.inc()
                log.info("push subscription gone (%s), removed: %s", status, _short(sub.endpoint))
                return
            cause = f"http_{status // 100}xx" if status else "error"
            self.metrics.push_failed.inc(cause)
            log.warning("push to %s failed: %s", _short(sub.endpoint), str(exc)[:200])
            return
        except Exception as exc:  # network errors of requests, bad keys: count, never fatal
            self._record(job, False, f"{type(exc).__name__}: {exc}"[:200])
            self.metrics.push_failed.inc("network")
            log.warning("push to %s failed: %s: %s", _short(sub.endpoint), type(exc).__name__, exc)
            return
        self._record(job, True, "")
        self.metrics.push_sent.inc(job.zone)

    def _record(self, job: PushJob, ok: bool, detail: str) -> None:
        self.store.record_notification(
            job.nudge_id, "webpush", job.subscription.endpoint, self.clock.now(), ok, detail
        )


def _short(endpoint: str) -> str:
    return endpoint if len(endpoint) <= 60 else endpoint[:57] + "..."
