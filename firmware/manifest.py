# Freeze the sensor firmware into a custom MicroPython image for the ESP32,
# so that its code runs from flash and leaves the heap to the data: about
# 61 KiB of the 87 KiB the firmware holds on a 110 KiB heap is loaded code
# (console `heap`, bench/sensor_memory.py).  Build:
#
#   cd micropython/ports/esp32
#   make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/hushlight/firmware/manifest.py
#
# boot.py, main.py, the loader (otaboot.py, otastate.py), config.json, ca.pem
# and release.pub stay on the filesystem: only they are flashed after such an
# image (files on the filesystem come before frozen modules on sys.path, so
# .mpy copies of these packages must not be there).  The frozen packages are
# the factory version; an update's slot (ota/a or ota/b, written by
# hushlight.ota) goes first on sys.path when it runs, so its modules load
# from the filesystem instead.

# the port's own frozen modules (asyncio, the networking bundle)
include("$(PORT_DIR)/boards/manifest.py")

# firmware/hushlight and the repository's protocol/ (paths are relative to
# this file)
package("hushlight")
package("protocol", base_path="..")
