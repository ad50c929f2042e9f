"""Wall-clock time for the records, and whether it can be trusted.

On the ESP32 the RTC starts at the epoch after a power-up; NTP sets it and
re-syncs it every `ntp_resync_s` (the crystal drifts a few seconds a day).
Until the first sync every record carries the `unsynced_time` flag.

On the unix port the host clock counts as synced.  With a virtual time
origin (`time_origin`, for simulations and the demo), records are stamped
origin + audio time instead, so a night of audio played at 600x real time
carries the night's timestamps; that clock counts as synced too.

Epoch times are ints, never floats: a float32 (the ESP32's) is 128 s coarse
at today's epoch seconds and 131 s at epoch ms.  Epoch ms are past 2**30, so
each one is a long int: they are made once per record, never per block.
"""

import time

from hushlight import platform
from hushlight.errors import ConfigError

# True where a float is a double: it holds epoch seconds to the microsecond
_DOUBLE = 1.0 + 2.0**-40 != 1.0


def origin_ms(origin):
    """The virtual time origin `origin` (UTC epoch seconds: an int, a decimal
    string such as "1781298000.125" to the millisecond, or a float where
    floats are doubles) as epoch ms, an int; ConfigError when it is none."""
    t = type(origin)
    ms = -1
    if t is int:
        ms = origin * 1000
    elif t is str:
        whole, dot, frac = origin.partition(".")
        if whole.isdigit() and len(frac) <= 3 and (frac.isdigit() or not dot):
            ms = int(whole) * 1000 + int((frac + "000")[:3])
    elif t is float and _DOUBLE and 0 <= origin < 4102444800:  # (NaN fails it)
        ms = int(origin * 1000 + 0.5)  # exact: under 2**53
    # before 2100 (protocol.schema.TIME_S_MAX)
    if not 0 <= ms < 4102444800000:
        raise ConfigError(
            "time_origin is %r; give UTC epoch seconds before 2100 as an integer or a "
            'string such as "1781298000.125" (a number with a point reaches a '
            "single-precision port 128 s coarse)" % (origin,)
        )
    return ms


class Clock:
    def __init__(self, origin=None):
        """`origin`: the virtual time origin (see `origin_ms`), or None for
        the wall clock."""
        self.virtual = origin is not None
        self.origin_ms = origin_ms(origin) if origin is not None else 0
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
