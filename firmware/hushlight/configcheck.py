"""Checks of the sensor's settings: config.json at boot, a remote config,
a console `set` (the rules are in hushlight.config's docstring).

Loaded for each use and dropped again (hushlight.once): a sensor checks its
settings at boot and when a technician or the gateway changes them, and the
sentences of its errors need not stay in the heap in between.
"""

import json

from hushlight import forget, timesync
from hushlight.config import REMOTE_KEYS
from hushlight.errors import ConfigError
from protocol import payloads
from protocol.errors import ProtocolError

# every key of config.json with its default (hushlight.config says what each means)
DEFAULTS = {
    "id": None,
    "site": None,
    "broker": None,
    "ca_file": None,
    "server_hostname": None,
    "mqtt_user": None,
    "mqtt_password": None,
    "keepalive_s": 30,
    "backoff_max_s": 30,
    "wifi_ssid": None,
    "wifi_password": None,
    "ntp_host": "pool.ntp.org",
    "ntp_resync_s": 3600,
    "source": "i2s",
    "sample_rate": 48000,
    "sensitivity_dbfs": -26.0,
    "i2s_id": 0,
    "i2s_sck": 32,
    "i2s_ws": 25,
    "i2s_sd": 33,
    "speed": 1.0,
    "time_origin": None,
    "config_rev": None,
    "interval_s": 1.0,
    "peak_threshold_db": 70.0,
    "calibration_offset_db": 0.0,
    "status_interval_s": 60,
    "backlog_rate": 20,
    "buffer_records": 2400,
    "console": "stdio",
    "ota_trial_s": 120,
}


def parse_brokers(text):
    """(tls, brokers) of the `broker` setting: one URL or several separated
    by commas, all of one scheme (protocol.brokerurl.parse_list, the parser
    the gateway and the tools use too); `brokers` is a tuple of (url, host,
    port) in the order the sensor tries them."""
    from protocol import brokerurl  # a check at start-up or on a change: forgotten after it

    try:
        parsed = brokerurl.parse_list(text)
    except ProtocolError as e:
        raise ConfigError(str(e))
    finally:
        forget("protocol.brokerurl")
    # (one broker: the setting's own string names it, no copy of it)
    entries = text.split(",") if len(parsed) > 1 else (text,)
    brokers = tuple([(entries[i].strip(), b[1], b[2]) for i, b in enumerate(parsed)])
    return parsed[0][3], brokers


def _check_int(values, key, lo, hi):
    v = values[key]
    if type(v) is not int or not lo <= v <= hi:
        raise ConfigError("%s is %r; give a whole number in %d..%d" % (key, v, lo, hi))


def validate_local(values):
    """Raise ConfigError for a setting the device cannot run with."""
    from protocol.topics import check_id  # a start-up check: forgotten after it

    for key in ("id", "site"):
        try:
            check_id(key, values[key])
        except ProtocolError as e:
            raise ConfigError(str(e))
    parse_brokers(values["broker"])
    _check_int(values, "keepalive_s", 5, 600)
    _check_int(values, "backoff_max_s", 1, 600)
    _check_int(values, "buffer_records", 100, 100000)
    _check_int(values, "ota_trial_s", 5, 3600)
    speed = values["speed"]
    if type(speed) not in (int, float) or not 0 <= speed <= 100000:
        raise ConfigError("speed is %r; give 0 (as fast as possible) or a factor > 0" % (speed,))
    if values["time_origin"] is not None:
        timesync.origin_ms(values["time_origin"])  # raises ConfigError
    console = values["console"]
    if console not in ("stdio", "off") and not (
        isinstance(console, str) and console.startswith("fd:") and console[3:].isdigit()
    ):
        raise ConfigError("console is %r; give stdio, fd:N or off" % (console,))
    # the remote-settable keys follow the wire rules
    remote = {}
    for key in REMOTE_KEYS:
        remote[key] = values[key]
    rev = values["config_rev"]
    remote["rev"] = 0 if rev is None else rev
    check_remote(remote)


def check_remote(d):
    """Validate a remote config dict with the wire rules; return it normalised.

    The dict is checked as it is (protocol.validation): a console `set`, a
    calibration or the boot's check of config.json does not load the JSON
    decoder, whose code would crowd the heap of a running sensor."""
    from protocol import validation

    try:
        return validation.validate("config", d)
    except ProtocolError as e:
        raise ConfigError(str(e))
    finally:
        forget("protocol.validation")


def _drop_decoder():
    # the payload decoder is needed again only at the next change of settings
    forget("protocol.decoding")
    forget("protocol.strictjson")
    forget("protocol.validation")


def load(path):
    """The values of config.json at `path` over the defaults, validated."""
    values = dict(DEFAULTS)
    try:
        f = open(path)
    except OSError:
        try:
            # a power cut between removing the old file and renaming the
            # new one (filesystems that cannot rename over a file)
            f = open(path + ".tmp")
        except OSError:
            raise ConfigError("no %s on the device; write one with `hushlight provision`" % path)
    try:
        with f:
            raw = json.load(f)
    except ValueError:
        raise ConfigError("%s is not valid JSON; write it again with `hushlight provision`" % path)
    if type(raw) is not dict:
        raise ConfigError("%s must hold one JSON object" % path)
    for key in raw:
        if key not in DEFAULTS:
            raise ConfigError(
                "%s has the unknown key %r; see config.example.json for the keys" % (path, key)
            )
    values.update(raw)
    validate_local(values)
    return values


def candidate(cfg, changes):
    """A validated copy of the remote settings with `changes` applied:
    (new values dict, list of changed keys)."""
    cur = {}
    for key in REMOTE_KEYS:
        cur[key] = cfg.values[key]
    cur.update(changes)
    rev = cur.pop("rev", cfg.values["config_rev"])
    cur["rev"] = 0 if rev is None else rev
    decoded = check_remote(cur)
    new = {}
    changed = []
    for key in REMOTE_KEYS:
        v = decoded[key]
        if v is None:
            v = cfg.values[key]
        new[key] = v
        if v != cfg.values[key]:
            changed.append(key)
    new["config_rev"] = rev
    if rev != cfg.values["config_rev"]:
        changed.append("config_rev")
    return new, changed


def decode_remote(cfg, payload):
    """Validate a config message; return (new values, changed keys)."""
    try:
        msg = payloads.decode_config(payload)
    except ProtocolError as e:
        raise ConfigError(str(e))
    finally:
        _drop_decoder()
    changes = {"rev": msg["rev"]}
    for key in REMOTE_KEYS:
        if msg[key] is not None:
            changes[key] = msg[key]
    return candidate(cfg, changes)
