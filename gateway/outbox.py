"""Messages waiting for the broker: bounded, kept across reconnects, a window in flight."""

from __future__ import annotations

import asyncio

import aiomqtt

__all__ = ["OUTBOX_MAX", "PUBLISH_WINDOW", "Outbox"]

OUTBOX_MAX = 10_000
PUBLISH_WINDOW = 20  # publishes awaiting their PUBACK at once (paho's in-flight limit)


class Outbox:
    """Messages waiting for the broker; survives reconnects, bounded (drops the oldest).

    Up to `window` publishes are in flight at once: a PUBACK comes back on the
    socket behind the whole stream of incoming records (50-150 ms at 10,000
    sensors), so waiting for each in turn would hold an override behind every
    nudge queued before it.  A message leaves the outbox only once the broker
    has acknowledged it.
    """

    def __init__(self, maxlen: int = OUTBOX_MAX, window: int = PUBLISH_WINDOW) -> None:
        # key (in publish order) -> (topic, payload, qos, retain)
        self._items: dict[int, tuple[str, bytes, int, bool]] = {}
        self._next_key = 0
        self._maxlen = maxlen
        self._window = window
        self._ready = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self.dropped = 0

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        if len(self._items) >= self._maxlen:
            del self._items[next(iter(self._items))]
            self.dropped += 1
        self._items[self._next_key] = (topic, payload, qos, retain)
        self._next_key += 1
        self._ready.set()
        self._empty.clear()

    def __len__(self) -> int:
        return len(self._items)

    async def pump(self, client: aiomqtt.Client) -> None:
        """Publish until cancelled, in order, up to `window` at a time; a broker error ends
        it (raised in an exception group) and what was not acknowledged is sent again
        on the next connection."""
        window = asyncio.Semaphore(self._window)
        started: set[int] = set()  # keys published on this connection

        async def one(key: int, item: tuple[str, bytes, int, bool]) -> None:
            try:
                topic, payload, qos, retain = item
                await client.publish(topic, payload, qos=qos, retain=retain)
            finally:
                window.release()
            self._items.pop(key, None)  # gone already if dropped meanwhile
            if not self._items:
                self._empty.set()

        async with asyncio.TaskGroup() as tg:
            while True:
                await self._ready.wait()
                self._ready.clear()
                for key, item in list(self._items.items()):
                    if key in started or key not in self._items:
                        continue
                    await window.acquire()
                    started.add(key)
                    tg.create_task(one(key, item), name=f"mqtt-publish-{key}")
                started &= self._items.keys()  # forget the acknowledged

    async def flushed(self) -> None:
        await self._empty.wait()
