"""The end of a non-live source (a WAV file, stdin): deliver what is
buffered within a bound, then the offline status (see hushlight.app).

Loaded when the audio ends (hushlight.once).
"""

import asyncio
import time

from hushlight.app import log
from protocol import payloads


async def deliver_rest(app):
    """Wait for the PUBACK of every buffered record, within a bound.

    Gives up after three keepalives in which no record was acknowledged
    (the broker stays away): what is left goes to flash at shutdown and
    is sent after the next start.  A connected link that acknowledges
    nothing for a keepalive gets every unacknowledged record again, in
    case an acknowledgement was lost (duplicates are dropped by seq)."""
    store = app.store
    log("audio ended; delivering %d buffered records" % store.buffered())
    ka = app.cfg["keepalive_s"] * 1000
    left = store.buffered()
    progress = time.ticks_ms()
    resent = progress
    while store.pending() and not app.stopping:
        app.publisher.wake.set()
        await asyncio.sleep_ms(50)
        now = time.ticks_ms()
        n = store.buffered()
        if n != left:
            left = n
            progress = resent = now
        if not store.pending():
            log("every record delivered")
        elif time.ticks_diff(now, progress) >= 3 * ka:
            log("%d records not acknowledged; kept for the next start" % n)
            return
        elif time.ticks_diff(now, resent) >= ka and app.mqtt.connected():
            resent = now
            app.publisher.restart()


async def goodbye(app):
    if app.mqtt.connected():
        try:
            await app.mqtt.publish(
                app.t_status, payloads.encode_status("offline"), qos=1, retain=True
            )
            await asyncio.sleep_ms(100)
            await app.mqtt.disconnect()
        except OSError:
            pass
