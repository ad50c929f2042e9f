"""Words about the messages, for the generated JSON Schema files and readers.

Kept apart from `protocol.schema` so that the firmware, which imports the
field tables, does not carry these strings in the sensor's RAM.
"""

# Rules between fields, which the field tables cannot say (and JSON Schema
# cannot check); the decoders enforce them.
CROSS_RULES = {
    "levels": ("t0 < t1 <= t0 + 3600000",),
    "summary": ("t0 < t1 <= t0 + 3600000", "l10 >= l50 >= l90"),
}

# What each field means, with its unit, for the generated JSON Schema files
# (the city's data platform) and for readers; a name means the same in every
# message it appears in.
FIELD_DOCS = {
    "seq": "record number of the sensor, +1 per record of this kind, kept across reboots",
    "t0": "start of the interval, UTC epoch milliseconds",
    "t1": "end of the interval, UTC epoch milliseconds",
    "laeq": "A-weighted equivalent level LAeq over the interval, dB",
    "lafmax": "maximum A-weighted Fast (125 ms) level LAFmax in the interval, dB",
    "lceq": "C-weighted equivalent level LCeq over the interval, dB",
    "lamin": "minimum of the 125 ms LAeq values, dB",
    "l10": "level exceeded 10 % of the time (125 ms LAeq values), dB",
    "l50": "level exceeded 50 % of the time (125 ms LAeq values), dB",
    "l90": "level exceeded 90 % of the time (125 ms LAeq values), dB",
    "peaks": "number of LAFmax peaks over peak_threshold_db in the interval",
    "flags": "conditions of the interval: clipped, unsynced_time, calibrating, overload",
    "state": "online, or offline (the last will)",
    "fw": "firmware version",
    "uptime_s": "seconds since the sensor started",
    "rssi": "Wi-Fi signal strength, dBm (null without a radio)",
    "free_mem": "free heap, bytes",
    "dsp_load": "fraction of real time the DSP takes (0.25 = a quarter of a core)",
    "buffered": "records waiting to be sent",
    "calibration_offset_db": "offset added to every level by calibration, dB",
    "config_rev": "rev of the remote config in force (null: none applied)",
    "dropped": "records dropped since start because the buffer was full",
    "config_error": "why the last remote config was rejected (null: it was not)",
    "time_synced": "whether the clock is synchronised (NTP)",
    "ota": "state of a firmware update: idle, staging, staged, trial, confirmed, refused, "
    "rolled_back",
    "ota_version": "the version the update state is about (null: none)",
    "ota_reason": "why the last update was refused or rolled back (null: it was not)",
    "rev": "revision of this config; the sensor echoes it as config_rev once applied",
    "interval_s": "length of a levels record, seconds, a whole number of 125 ms blocks",
    "peak_threshold_db": "LAFmax threshold a peak is counted over, dB",
    "status_interval_s": "seconds between status messages",
    "backlog_rate": "records per second sent when catching up after an outage",
    "sample_rate": "microphone sample rate, Hz",
    "cmd_id": "id of the lighting command",
    "level": "light level, % (null: back to the normal programme)",
    "ramp_s": "seconds to ramp to the level",
    "expires_at": "when the override ends by itself, UTC epoch seconds",
    "reason": "why the command was sent",
    "zone": "street zone id",
    "lease_epoch": (
        "epoch of the sending gateway's lease on the zone; a controller refuses a command "
        "with an epoch older than the newest it has seen for the group (absent: one gateway, "
        "no leases)"
    ),
    "source": "programme or override",
    "nudge_id": "id of the nudge",
    "at": "when the nudge was decided, UTC epoch milliseconds",
    "kind": "kind of nudge",
    "message": "text for residents and visitors, per language tag",
}

# One line per message for the generated JSON Schema files and for readers.
DESCRIPTIONS = {
    "levels": "One interval record (default 1 s) of A-weighted levels from a sensor.",
    "summary": "One-minute summary of a sensor's levels with percentiles and peak count.",
    "status": 'Retained sensor status; the last will is {"state":"offline"}.',
    "config": "Retained remote configuration of one sensor; applied whole or not at all.",
    "light_set": "Lighting override for a light group; always carries an expiry.",
    "light_state": "Retained state reported by a light group.",
    "nudge": "A nudge sent to residents and visitors of one zone.",
}
