"""Settings changed while the sensor runs: a remote config message, a
console `set` or the end of a `cal` (see hushlight.app for what takes
effect when).

Loaded for each change and dropped again (hushlight.once).
"""

import json

from hushlight import once
from hushlight.app import log
from hushlight.config import REMOTE_KEYS
from hushlight.errors import ConfigError

# tries of a config that met a heap too cut up to decode it, a second apart
_TRIES = 5


def on_config(app, payload, tries=_TRIES):
    """A config message (MQTTClient.on_message, hushlight.app)."""
    try:
        new, changed = app.cfg.decode_remote(payload)
        if new["config_rev"] == app.cfg["config_rev"]:
            # the retained config comes again on every connection: a rev
            # already applied stays as it is, console changes included
            return
        apply(app, new, changed)
    except ConfigError as e:
        log("config rejected: %s" % e)
        app.config_error = str(e)[:200]
        app.status_changed.set()
        return
    except MemoryError:
        # It arrived in the middle of a read, with the heap cut up: the
        # decoder may find no block to load into.  Try again a moment later,
        # after a collection, rather than lose it until the next connection
        # brings the retained one back.
        if tries > 1:
            import asyncio

            asyncio.create_task(_again(app, payload, tries - 1))
        else:
            log("config not applied: out of memory %d times" % _TRIES)
            app.config_error = "not enough memory to decode the config; send it again"
            app.status_changed.set()
        return
    log("config rev %s applied: %s" % (new["config_rev"], ", ".join(changed)))
    app.config_error = None
    app.status_changed.set()


async def _again(app, payload, tries):
    import asyncio
    import gc

    await asyncio.sleep(1)
    gc.collect()
    once("remote").on_config(app, payload, tries)


def apply(app, new, changed):
    """Take validated settings `new` (whose keys `changed` differ) into use."""
    if "sample_rate" in changed and not app.cfg["source"].startswith(("i2s", "synthetic:")):
        raise ConfigError(
            "sample_rate %r cannot be applied: the audio source %r has its own rate of %d Hz"
            % (new["sample_rate"], app.cfg["source"], app.capture.rate)
        )
    app.cfg.commit(new)
    if "calibration_offset_db" in changed:
        app.capture.meter.set_calibration(new["calibration_offset_db"])
    if "interval_s" in changed:
        app.capture.interval_blocks = int(new["interval_s"] * 8)
    if "peak_threshold_db" in changed:
        app.capture.meter.set_peak_threshold(new["peak_threshold_db"])
    if "sample_rate" in changed:
        # a new rate means a new I2S set-up and filter chain: restart with
        # the stored config, as after a power cycle
        log("sample_rate %d Hz stored; restarting" % new["sample_rate"])
        app.request_reboot()
    # interval_s takes effect at the next interval boundary,
    # status_interval_s and backlog_rate at their next use


def set_config(app, key, value):
    """Console `set`: the same validation as a remote config."""
    if key == "rev" or key == "config_rev" or key not in app.cfg.values:
        raise ConfigError("key %r cannot be set; settable keys: %s" % (key, ", ".join(REMOTE_KEYS)))
    if key not in REMOTE_KEYS:
        raise ConfigError(
            "%s is a provisioning setting, not settable from the console; settable keys: %s"
            % (key, ", ".join(REMOTE_KEYS))
        )
    new, changed = app.cfg.candidate({key: value})
    if changed:
        apply(app, new, changed)
        app.status_changed.set()


def console_set(con, args):
    """The console's `set KEY VALUE`."""
    if len(args) != 2:
        con.fail("set", "usage: set KEY VALUE, e.g. set interval_s 1")
        return
    key = args[0]
    value = parse_value(args[1])
    try:
        set_config(con.app, key, value)
    except ConfigError as e:
        con.fail("set", str(e))
        return
    con.send({"cmd": "set", "ok": True, "key": key, "value": con.app.setting(key)})


def calibrated(con, measured, ref, new, old):
    """The end of the console's `cal`: store the new offset and say so."""
    try:
        set_config(con.app, "calibration_offset_db", new)
    except ConfigError as e:
        con.fail("cal", "measured %.2f dB for a %.2f dB reference: %s" % (measured, ref, e))
        return
    con.send(
        {
            "cmd": "cal",
            "ok": True,
            "done": True,
            "measured_db": round(measured, 2),
            "ref_db": ref,
            "offset_db": new,
            "previous_offset_db": old,
        }
    )


def parse_value(text):
    """VALUE of `set`: JSON, or a bare word taken as a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text
