"""Wall-clock time for the records, and whether it can be trusted.

On the ESP32 the RTC starts at the epoch after a power-up; NTP sets it and
re-syncs it every `ntp_resync_s` (the crystal drifts a few seconds a day).
Until the first sync every record carries the `unsynced_time` flag.

On the unix port the host clock counts as synced.  With a virtual time
origin (`time_origin`, for simulations and the demo), records are stamped
origin + audio time instead, so a night of audio played at 600x real time
carries the night's timestamps; that clock counts as synced too.
"""

import time

from hushlight import platform


class Clock:
    def __init__(self, origin_s=None):
        self.virtual = origin_s is not None
        self.origin_ms = int(origin_s * 1000) if origin_s is not None else 0
        self.synced = platform.UNIX
        self.last_sync_ms = None

    def stamp(self, audio_ms, start_ms):
        """Epoch ms of the instant `audio_ms` into the audio that began at `start_ms`."""
        if self.virtual:
            return self.origin_ms + audio_ms
        return start_ms + audio_ms

    def now_ms(self):
        return platform.epoch_ms()


async def ntp_task(clock, host, resync_s, log):
    """Sync the RTC by NTP now and every `resync_s` (ESP32 only)."""
    if not platform.ESP32 or clock.virtual:
        return
    import asyncio

    import ntptime

    ntptime.host = host
    while True:
        try:
            ntptime.settime()
            clock.synced = True
            clock.last_sync_ms = time.ticks_ms()
            delay = resync_s
        except Exception as e:  # no network yet, DNS failure, timeout: retry soon
            log("ntp: sync with %s failed (%r); retrying" % (host, e))
            delay = 30 if not clock.synced else 300
        await asyncio.sleep(delay)
