"""What differs between the ESP32 and the MicroPython unix port, detected once.

Everything else in the firmware asks this module instead of testing
`sys.platform` itself, so the host runs the same code paths as the device and
the differences stay listed in one place.
"""

import gc
import sys
import time

ESP32 = sys.platform == "esp32"
UNIX = not ESP32

FW_VERSION = "0.1.0"

# Some ports count seconds from 2000-01-01; the wire always carries UNIX epoch.
_EPOCH_OFFSET_S = 946684800 if time.gmtime(0)[0] == 2000 else 0


def epoch_ms():
    """Wall clock as UNIX epoch milliseconds (an int)."""
    if hasattr(time, "time_ns"):
        return time.time_ns() // 1000000 + _EPOCH_OFFSET_S * 1000
    return (int(time.time()) + _EPOCH_OFFSET_S) * 1000


def free_mem():
    return gc.mem_free()


def rssi():
    """Received signal strength in dBm, or None when there is no radio (unix port)."""
    if not ESP32:
        return None
    try:
        import network

        sta = network.WLAN(network.STA_IF)
        if sta.isconnected():
            return sta.status("rssi")
    except Exception:  # the radio may be off or resetting: no figure then
        pass
    return None


class Watchdog:
    """The ESP32's hardware watchdog; a no-op on the unix port.

    Fed from the capture loop: if audio stops flowing (I2S stuck, a task
    hogging the loop) the device resets instead of silently going deaf.
    """

    def __init__(self, timeout_ms=30000):
        self._wdt = None
        if ESP32:
            import machine

            self._wdt = machine.WDT(timeout=timeout_ms)

    def feed(self):
        if self._wdt is not None:
            self._wdt.feed()


def reset():
    """Restart the device.  On the unix port the process exits with status 0
    (the `hushlight sensor` wrapper then starts it again, like a boot)."""
    if ESP32:
        import machine

        machine.reset()
    raise SystemExit(0)
