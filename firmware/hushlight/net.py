"""Wi-Fi station link on the ESP32; a no-op on the unix port (the host has a network).

Connects with a capped exponential back-off.  After `RESET_AFTER` failed
attempts in a row the radio is switched off and on again (a full link reset):
ESP-IDF's Wi-Fi driver sometimes sticks in a state no reconnect clears.
"""

import time

from hushlight import platform

BACKOFF_MIN_S = 1
BACKOFF_MAX_S = 60
RESET_AFTER = 5
CONNECT_TIMEOUT_MS = 15000


def connected():
    if not platform.ESP32:
        return True
    import network

    return network.WLAN(network.STA_IF).isconnected()


async def keep_connected(ssid, password, log):
    """Task: bring the link up and keep it up (returns at once on the unix port)."""
    if not platform.ESP32:
        return
    import asyncio

    import network

    sta = network.WLAN(network.STA_IF)
    delay = BACKOFF_MIN_S
    failures = 0
    while True:
        if sta.isconnected():
            failures = 0
            delay = BACKOFF_MIN_S
            await asyncio.sleep(5)
            continue
        if failures and failures % RESET_AFTER == 0:
            log("wifi: %d failures in a row; resetting the radio" % failures)
            sta.active(False)
            await asyncio.sleep(1)
        sta.active(True)
        try:
            sta.connect(ssid, password)
        except OSError as e:
            log("wifi: connect to %r failed: %r" % (ssid, e))
        start = time.ticks_ms()
        while (
            not sta.isconnected() and time.ticks_diff(time.ticks_ms(), start) < CONNECT_TIMEOUT_MS
        ):
            await asyncio.sleep_ms(200)
        if sta.isconnected():
            log("wifi: connected to %r" % ssid)
            continue
        failures += 1
        try:
            sta.disconnect()
        except OSError:
            pass
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX_S)
