"""Settings changed while the sensor runs: a remote config message or a
console `set` (see hushlight.app for what takes effect when).

Loaded for each change and dropped again (hushlight.once).
"""

from hushlight.app import log
from hushlight.config import REMOTE_KEYS
from hushlight.errors import ConfigError


def on_config(app, payload):
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
    log("config rev %s applied: %s" % (new["config_rev"], ", ".join(changed)))
    app.config_error = None
    app.status_changed.set()


def apply(app, new, changed):
    """Take validated settings `new` (whose keys `changed` differ) into use."""
    if "sample_rate" in changed and not app.cfg["source"].startswith(("i2s", "synthetic:")):
        raise ConfigError(
            "sample_rate %r cannot be applied: the audio source %r has its own rate of %d Hz"
            % (new["sample_rate"], app.cfg["source"], app.rate)
        )
    app.cfg.commit(new)
    if "calibration_offset_db" in changed:
        app.meter.set_calibration(new["calibration_offset_db"])
    if "interval_s" in changed:
        app.interval_blocks = int(new["interval_s"] * 8)
    if "peak_threshold_db" in changed:
        app.meter.set_peak_threshold(new["peak_threshold_db"])
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
