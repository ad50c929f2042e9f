"""The sensor's settings: `config.json` in the flash root (the state directory
on the unix port), remote config from MQTT, console `set`.

Every key of config.json (firmware/config.example.json shows them all):

Identity and network, written by the provisioning tools:
  id                 sensor id, [a-z0-9-]{1,32}
  site               site id, [a-z0-9-]{1,32}
  broker             mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS, 8883 by default);
                     several, separated by commas and all of one scheme, are brokers
                     to fail over across: tried in order, moving on to the next when
                     one does not answer (the persistent session and the resend of
                     unacknowledged records carry over)
  ca_file            CA certificate file (PEM) that must sign the broker's certificate
                     (mqtts only; provisioning writes ca.pem beside config.json)
  server_hostname    name checked in the broker's certificate (default: the HOST
                     of the broker in use)
  mqtt_user, mqtt_password   MQTT credentials (optional)
  keepalive_s        MQTT keepalive, 5..600 s (default 30): the offline status
                     appears at most 1.5 times this after the sensor dies
  backoff_max_s      longest wait between MQTT reconnect attempts, 1..600 s
                     (default 30; the wait doubles from 0.5 s, with jitter)
  wifi_ssid, wifi_password   Wi-Fi network (ESP32 only)
  ntp_host           NTP server (ESP32 only; default pool.ntp.org)
  ntp_resync_s       seconds between NTP re-syncs (default 3600)

Audio:
  source             "i2s" (ESP32), "wav:PATH", "stdin" (s16le mono PCM) or
                     "synthetic:SCENE" (quiet, street, cal94, silence)
  sample_rate        48000 (default), 44100, 32000 or 16000 (remote-settable)
  sensitivity_dbfs   microphone sensitivity at 94 dB SPL, 1 kHz (INMP441: -26.0)
  i2s_id, i2s_sck, i2s_ws, i2s_sd   I2S peripheral and pins (INMP441 defaults 0, 32, 25, 33)
  speed              unix port: play a non-live source at this many times real
                     time; 0 = as fast as possible
  time_origin        unix port: UTC epoch seconds of the first sample, an
                     integer or a string to the ms ("1781298000.125"); records
                     are stamped origin + audio time (null: the host clock)

Remote-settable (validated by protocol.schema.CONFIG, the same rules for the
MQTT config topic and the console `set`):
  config_rev             rev of the last remote config applied (null: none yet)
  interval_s             record interval, a multiple of 0.125 s in 1..60 (default 1)
  peak_threshold_db      LAFmax above which a summary counts a peak (default 70)
  calibration_offset_db  added to every level, -20..20 dB (set by `cal`)
  status_interval_s      status heartbeat, 10..3600 s (default 60)
  backlog_rate           records per second when resending a backlog (default 20)

Buffering and the console:
  buffer_records     records kept while the broker is unreachable (default
                     2400: 10 min of 1 s records plus 24 h of minute
                     summaries, with room to spare)
  console            "stdio" (the serial REPL line), "fd:N" (unix port: a
                     pseudo-terminal on file descriptor N) or "off"

Updates over the air (hushlight.ota, hushlight.otatrial):
  ota_trial_s        seconds a new version has to pass its trial (connected,
                     a record acknowledged, the self-test's checks) before it
                     is rolled back, 5..3600 (default 120; not remote-settable)

A remote config is validated whole, then applied all at once and written to
config.json with an atomic rename; a bad one changes nothing.
"""

import json

from hushlight import once
from hushlight.store import write_atomic
from protocol import schema

PATH = "config.json"

# plain strings (the schema tables are typed loosely)
REMOTE_KEYS = tuple([str(k) for k in schema.CONFIG_KEYS])
SECRET_KEYS = ("mqtt_password", "wifi_password")


def validate_local(values):
    """Raise ConfigError for a setting the device cannot run with."""
    once("configcheck").validate_local(values)


def check_remote(d):
    """Validate a remote config dict with the wire rules; return it decoded."""
    return once("configcheck").check_remote(d)


class Config:
    def __init__(self, path=PATH):
        self.path = path
        # read and checked by hushlight.configcheck, loaded for that
        self.values = once("configcheck").load(path)

    def __getitem__(self, key):
        return self.values[key]

    def get(self, key, default=None):
        return self.values.get(key, default)

    def public(self, key):
        """Value shown on the console: secrets are masked."""
        v = self.values[key]
        if key in SECRET_KEYS and v:
            return "***"
        return v

    def candidate(self, changes):
        """A validated copy of the remote settings with `changes` applied:
        (new values dict, list of changed keys)."""
        return once("configcheck").candidate(self, changes)

    def decode_remote(self, payload):
        """Validate a config message; return (new values, changed keys)."""
        return once("configcheck").decode_remote(self, payload)

    def commit(self, new):
        """Take validated values and persist them (atomic file replace)."""
        self.values.update(new)
        self.save()

    def save(self):
        write_atomic(self.path, json.dumps(self.values).encode())


def __getattr__(name):
    # the defaults are read when config.json is (hushlight.configcheck)
    if name == "DEFAULTS":
        return once("configcheck").DEFAULTS
    raise AttributeError(name)
