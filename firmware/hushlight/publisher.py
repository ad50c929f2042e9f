"""Publisher: the stored records go out oldest first with QoS 1, at most
`_WINDOW` in flight, and leave the store on their PUBACK.

On each new connection whatever is not acknowledged goes again, oldest
first (the gateway drops duplicates by seq), at most `backlog_rate` records
a second of audio time.  The end of a non-live source: hushlight.ending.
"""

import asyncio
import time

from micropython import const

from hushlight.store import LEVELS, SUMMARY

_WINDOW = 8  # QoS 1 messages in flight at once


# a name mypy takes as true: the types of Publisher's declared attributes; a const, so that
# MicroPython compiles the block below away (its imports would cost heap)
TYPE_CHECKING = const(0)
if TYPE_CHECKING:
    from hushlight.app import App


class Publisher:
    """hushlight.start gives it the attributes below (as for Capture)."""

    app: "App"
    t_levels: str
    t_summary: str
    inflight: dict  # packet id -> (kind, seq) of a record awaiting PUBACK
    # PUBACKs that came before publish() returned their packet id (the
    # reader runs while publish yields), kept until the loop asks
    acked_early: set
    wake: "asyncio.Event"  # set when there may be something to send

    def restart(self):
        """A new connection: everything not acknowledged goes again."""
        self.inflight = {}
        self.app.store.rewind()
        self.wake.set()

    def on_puback(self, pid):
        rec = self.inflight.pop(pid, None)
        if rec is not None:
            self.app.store.ack(rec[0], rec[1])
            self.wake.set()
        else:
            # maybe the record being published: its PUBACK outran publish()
            # returning the id; without this it would wait in the store (and
            # take a window slot) until the next connection
            self.acked_early.add(pid)

    async def run(self):
        app = self.app
        store = app.store
        mqtt = app.mqtt
        wake = self.wake
        sent_at = time.ticks_ms()
        while True:
            if not mqtt.connected():
                await mqtt.wait_connected()
                continue
            if len(self.inflight) >= _WINDOW:
                wake.clear()
                await wake.wait()
                continue
            kind = SUMMARY
            rec = store.next_unsent(SUMMARY)
            if rec is None:
                kind = LEVELS
                rec = store.next_unsent(LEVELS)
            if rec is None:
                wake.clear()
                await wake.wait()
                continue
            topic = self.t_summary if kind == SUMMARY else self.t_levels
            # from here on a PUBACK of no known record can only be this
            # record's (or a status publish's, whose id differs from it)
            self.acked_early.clear()
            try:
                pid = await mqtt.publish(topic, rec[1], qos=1)
            except OSError:
                continue  # the link dropped; the next connection rewinds
            if pid in self.acked_early:
                self.acked_early.clear()
                store.ack(kind, rec[0])
            else:
                self.inflight[pid] = (kind, rec[0])
            # bounded rate: backlog_rate records per second of audio time
            cfg = app.cfg
            speed = cfg["speed"] if not app.capture.source.live else 1
            if speed > 0:
                gap = int(1000 / (cfg["backlog_rate"] * max(speed, 1)))
                wait = gap - time.ticks_diff(time.ticks_ms(), sent_at)
                if wait > 0:
                    await asyncio.sleep_ms(wait)
            sent_at = time.ticks_ms()
