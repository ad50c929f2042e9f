# Runs first at every boot (ESP32); main.py follows.  Quiet the ESP-IDF
# debug output so the console line carries only the technician protocol.
import sys

if sys.platform == "esp32":
    import esp

    esp.osdebug(None)
