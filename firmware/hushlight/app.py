"""The sensor application: its parts, the status and the run.

One asyncio loop runs these tasks:

- capture (hushlight.capture): the audio measured block by block, records
  into the store;
- publisher (hushlight.publisher): the stored records out with QoS 1;
- status: retained status every `status_interval_s` and on change;
- the MQTT client itself (reconnects by itself), Wi-Fi and NTP on the ESP32,
  and the console (hushlight.console, through App's console interface).

A remote config (retained, on `.../config`) is validated whole, applied at
once (the interval at the next interval boundary; a new sample_rate by a
restart) and persisted; a bad one is reported in status `config_error` and
changes nothing.  A rev already applied is not applied again (the retained
config comes back on every connection), so console changes stay until the
next rev (hushlight.remote).

When a non-live source ends (a WAV file, stdin), the application waits until
every record is acknowledged (hushlight.ending), publishes its offline status
and stops.  On the unix port `reboot` exits with status 0 after leaving a
`reboot` marker file that `hushlight sensor` takes as "start me again".
"""

import gc

# what the heap holds before the firmware's code loads (see App.heap_table)
gc.collect()
_BOOT = gc.mem_alloc()

import asyncio  # noqa: E402  # after the count above
import time  # noqa: E402

from micropython import const  # noqa: E402

from hushlight import forget, once, platform, timesync  # noqa: E402
from hushlight.errors import ConfigError  # noqa: E402
from hushlight.store import LEVELS  # noqa: E402
from protocol import payloads  # noqa: E402

# the compiler's leftovers go now, before the application allocates
gc.collect()
_CODE = gc.mem_alloc() - _BOOT

# a name mypy takes as true: the names of App's declared attributes; a const, so that
# MicroPython compiles the block below away (its imports would cost heap)
TYPE_CHECKING = const(0)
if TYPE_CHECKING:
    from typing import Any

    from hushlight.capture import Capture
    from hushlight.config import Config
    from hushlight.console import Console
    from hushlight.mqtt import MQTTClient
    from hushlight.publisher import Publisher
    from hushlight.store import Store
REBOOT_MARKER = "reboot"


def log(msg):
    print("hushlight: " + msg)


def _allocated():
    gc.collect()
    return gc.mem_alloc()


class App:
    # what hushlight.start gives an App, declared for mypy (annotations
    # without a value cost nothing on MicroPython)
    cfg: "Config"
    store: "Store"
    clock: "timesync.Clock"
    mqtt: "MQTTClient"
    capture: "Capture"
    publisher: "Publisher"
    site: str
    sensor: str
    t_status: str
    t_config: str
    uptime_ms: int
    tick_seen: "Any"
    config_error: "str | None"
    stopping: bool
    reboot: bool
    status_changed: "asyncio.Event"
    console: "Console | None"
    # an update (hushlight.otatrial): its fields of status (ota,
    # ota_version, ota_reason; None until an update came); a version on
    # trial: the task that checks it; a staging (hushlight.ota.Staging)
    ota: "dict[str, Any] | None"
    ota_task: "Any"
    ota_stage: "Any"

    def __init__(self, config_path="config.json"):
        # where the heap goes, measured as it is taken (console `heap`)
        self.heap = {"code": _CODE}
        mark = _allocated()
        start = once("start")
        mark = self.count_heap("code", mark)
        start.build(self, config_path, mark)
        mark = _allocated()
        start = None
        # the topic rules and the coefficient tables are needed at start-up only
        forget("protocol.topics")
        forget("hushlight.coeffs")
        self.count_heap("code", mark)  # the start-up code is gone again

    # ---- set-up ----------------------------------------------------------

    def count_heap(self, part, since):
        """Add what the heap grew by since `since` (a mem_alloc figure) to
        `part` of the heap table; return the figure now."""
        now = _allocated()
        self.heap[part] = self.heap.get(part, 0) + now - since
        return now

    def heap_table(self):
        """Bytes of heap per part of the firmware, and free (hushlight.heap)."""
        return once("heap").table(self, _BOOT)

    # ---- status ----------------------------------------------------------

    def status_fields(self, full=False):
        gc.collect()
        f = {
            "state": "online",
            "fw": platform.FW_VERSION,
            "uptime_s": self.uptime() // 1000,
            "rssi": platform.rssi(),
            "free_mem": platform.free_mem(),
            "dsp_load": round(self.capture.dsp_load(), 4),
            "buffered": self.store.buffered(),
            "dropped": self.store.dropped,
            "calibration_offset_db": self.cfg["calibration_offset_db"],
            "config_rev": self.cfg["config_rev"],
            "config_error": self.config_error,
            "time_synced": self.clock.synced,
        }
        if self.ota:
            f.update(self.ota)
        if full:
            f["id"] = self.sensor
            f["site"] = self.site
            f["broker_connected"] = self.mqtt.connected()
            f["broker_in_use"] = self.mqtt.url  # one of the `broker` list
            f["rate"] = self.capture.rate
            f["audio_s"] = self.capture.audio_s
            f["seq"] = self.store.next[LEVELS]
        return f

    def uptime(self):
        now = time.ticks_ms()
        self.uptime_ms += time.ticks_diff(now, self.tick_seen)
        self.tick_seen = now
        return self.uptime_ms

    async def _publish_status(self):
        f = self.status_fields()
        state = f.pop("state")
        try:
            await self.mqtt.publish(
                self.t_status, payloads.encode_status(state, **f), qos=1, retain=True
            )
        except OSError:
            pass  # not connected: the next connection publishes a fresh one

    async def status_task(self):
        while True:
            changed = True
            try:
                await asyncio.wait_for(self.status_changed.wait(), self.cfg["status_interval_s"])
            except asyncio.TimeoutError:
                changed = False
            self.status_changed.clear()
            self.capture.roll_load()
            self.uptime()  # (every tick: the tick counter wraps)
            if not self.mqtt.connected():
                if not changed:
                    continue  # the next connection's birth status is fresh
                # A change while the link is down or still being set up (a
                # retained config comes while the subscriptions are made,
                # after the birth status went out): said once it is up.
                await self.mqtt.wait_connected()
            await self._publish_status()

    # ---- MQTT callbacks --------------------------------------------------

    async def _on_connect(self):
        why = self.mqtt.previous_error
        if why is None:
            log("connected to %s" % self.mqtt.url)
        else:
            log("connected to %s again (after: %s)" % (self.mqtt.url, why))
        self.publisher.restart()
        await self._publish_status()
        await self.mqtt.subscribe(self.t_config, 1)
        # updates: offers with QoS 1 (one sent while we were away still
        # comes), the release's chunks with QoS 0 (protocol.ota)
        ota = self.t_status[:-6] + "ota/"
        await self.mqtt.subscribe(ota + "offer", 1)
        await self.mqtt.subscribe(ota + "chunk", 0)

    def _on_down(self, why, retry_ms):
        # the console (serial line, or the virtual sensor's stderr) says why,
        # at the back-off's pace: doubling from 0.5 s up to backoff_max_s
        log("%s; retry in %d.%d s" % (why, retry_ms // 1000, retry_ms % 1000 // 100))

    def _on_message(self, topic, payload, retained):
        if topic == self.t_config:
            if payload:  # an empty retained message only clears the topic
                once("remote").on_config(self, payload)
        elif topic.endswith("/chunk"):
            if self.ota_stage:
                self.ota_stage.chunk(payload)
        elif payload:  # .../ota/offer
            # (a staging keeps hushlight.ota loaded while it lasts)
            once("otaoffer").offer(self, payload)

    # ---- the console's interface ------------------------------------------
    # hushlight.console and the commands it loads (hushlight.commands, the
    # console half of hushlight.remote) see the application through these
    # only: `sensor`, status_fields(full), heap_table(), setting(key),
    # setting_keys(), start_calibration(blocks), end_calibration(),
    # request_reboot(); a setting changes by hushlight.remote.set_config, the
    # rule a remote config follows too.  The self-test's checks
    # (hushlight.commands.checks) also serve an update's trial and read the
    # capture, the MQTT client and the clock themselves.

    def setting(self, key):
        """The value of setting `key` as the console shows it (secrets masked)."""
        return self.cfg.public(key)

    def setting_keys(self):
        return sorted(self.cfg.values)

    def start_calibration(self, blocks):
        # (the run keeps hushlight.commands loaded while it lasts)
        self.capture.cal = once("commands").CalRun(blocks)
        return self.capture.cal

    def end_calibration(self):
        self.capture.cal = None

    def request_reboot(self):
        self.reboot = True
        self.stopping = True

    # ---- run ---------------------------------------------------------------

    async def run(self):
        cfg = self.cfg
        from hushlight import net

        log("sensor %s of site %s: connecting to %s" % (self.sensor, self.site, cfg["broker"]))
        tasks = [
            asyncio.create_task(net.keep_connected(cfg["wifi_ssid"], cfg["wifi_password"], log)),
            asyncio.create_task(
                timesync.ntp_task(self.clock, cfg["ntp_host"], cfg["ntp_resync_s"], log)
            ),
            asyncio.create_task(self.mqtt.run()),
            asyncio.create_task(self.publisher.run()),
            asyncio.create_task(self.status_task()),
        ]
        if cfg["console"] != "off":
            mark = _allocated()
            from hushlight.console import Console

            self.console = Console(self, cfg["console"])
            self.count_heap("console", mark)
            tasks.append(asyncio.create_task(self.console.run()))
        log("heap: " + once("heap").line(self, _BOOT))
        await self.capture.run()
        ending = once("ending")
        if not self.stopping:
            # the audio ended (a file, stdin): deliver everything, then say goodbye
            await ending.deliver_rest(self)
        await ending.goodbye(self)
        for t in tasks:
            t.cancel()

    def shutdown(self):
        self.store.flush()
        if self.reboot and platform.UNIX:
            with open(REBOOT_MARKER, "w") as f:
                f.write("1")


def release_heap_lock():
    """Give back a heap lock that an interrupt left behind.

    On the unix port an interrupt (SIGINT from `hushlight sensor`) that lands
    while the collector holds the heap lock unwinds without releasing it; the
    next allocation then fails with "heap is locked" and the stop path would
    lose the records still in RAM.  The process is about to flush and exit, so
    the lock is released for that; a heap that allocates is left alone.
    """
    import micropython

    for _ in range(8):
        try:
            bytearray(16)
            return
        except MemoryError:
            micropython.heap_unlock()


def main():
    import sys

    try:
        app = App()
    except ConfigError as e:
        print("hushlight: error: %s" % e, file=sys.stderr)
        if platform.ESP32:
            # nothing sensible to run: wait for a technician, then try again
            time.sleep(60)
            platform.reset()
        raise SystemExit(2)
    status = 0
    try:
        asyncio.run(app.run())
    except KeyboardInterrupt:
        release_heap_lock()
        log("stopping")
    except Exception as e:  # a bug or an exhausted heap: never sit there deaf
        log("fatal: %r" % (e,))
        sys.print_exception(e)
        status = 1
    app.shutdown()
    if app.reboot or (status and platform.ESP32):
        platform.reset()
    raise SystemExit(status)
