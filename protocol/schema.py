"""Field tables of every message of the MQTT contract (schema version 1).

The tables drive the validating decoders and the encoders in
`protocol.payloads` and the JSON Schema files that `tools/schemas.py`
generates for the city's data platform, so a field is defined exactly once.

A field is a tuple ``(name, type, required, nullable, lo, hi, extra)``:

- ``type``: one of the ``T_*`` codes below;
- ``required``: absent -> ProtocolError("missing_field"); optional fields that
  are absent decode as ``None`` (``[]`` for flags) so consumers need no `.get`;
- ``nullable``: JSON ``null`` is allowed (decodes as ``None``);
- ``lo``/``hi``: inclusive range of a number, or the length range of a text in
  UTF-8 bytes (the same on every port);
- ``extra``: decimals on the wire for numbers, the allowed values for enums,
  flags and int choices.

Remote sensor config (`CONFIG`): the wire validation lives here, the meaning
of each key belongs to the firmware's config module.  Keys: ``rev`` (required,
echoed as ``config_rev`` in status), ``interval_s`` (record interval, a whole
number of 125 ms DSP blocks), ``peak_threshold_db`` (LAFmax threshold counted
as a peak in summaries), ``calibration_offset_db`` (added to every level),
``status_interval_s`` (status heartbeat), ``backlog_rate`` (records per
second when a backlog is resent after an outage), ``sample_rate``.  A key
missing from a config message keeps the sensor's current value; an unknown
key rejects the whole config ("unknown_field"), so a typo is reported
instead of silently ignored.
"""

import sys

# field tuple indices
NAME = 0
TYPE = 1
REQUIRED = 2
NULLABLE = 3
LO = 4
HI = 5
EXTRA = 6

# field types
T_UINT = 0  # JSON integer (never a bool or a float) in lo..hi
T_NUM = 1  # JSON number in lo..hi; decodes as float; `extra` decimals on the wire
T_LEVEL = 2  # sound level in dB, 0..160, 0.01 dB on the wire; decodes as float
T_TIME_MS = 3  # UTC epoch milliseconds, integer
T_TIME_S = 4  # UTC epoch seconds, integer
T_ID = 5  # [a-z0-9-]{1,32}
T_TOKEN = 6  # [A-Za-z0-9._:-]{1,64}: command and nudge ids (UUIDs fit)
T_TEXT = 7  # free text, length lo..hi characters
T_ENUM = 8  # one string of `extra`
T_FLAGS = 9  # JSON array of distinct strings of `extra`
T_BOOL = 10
T_INT = 11  # JSON integer in lo..hi, and in `extra` when that is not None
T_LANGMAP = 12  # JSON object {language: text}, at least one entry, text up to hi chars

LEVEL_MIN = 0
LEVEL_MAX = 160
# JavaScript consumers lose integer precision past 2**53 - 1.
UINT_MAX = 9007199254740991
# 2100-01-01T00:00:00Z: later timestamps are a unit mistake (us instead of ms).
TIME_S_MAX = 4102444800
TIME_MS_MAX: int = TIME_S_MAX * 1000
# A record covers at most an hour: longer spans are a clock jump, not data.
SPAN_MS_MAX = 3600 * 1000
REV_MAX = 2147483647
TOKEN_MAX = 64

# Level flags, in bit order for the firmware's bitmask form (bit 0 = clipped).
FLAGS = ("clipped", "unsynced_time", "calibrating", "overload")
FLAG_CLIPPED = 1
FLAG_UNSYNCED_TIME = 2
FLAG_CALIBRATING = 4
FLAG_OVERLOAD = 8

STATES = ("online", "offline")
# an update's state in status (the same tuple as protocol.ota.STATES, which
# loads on the sensor only while an update runs)
OTA_STATES = ("idle", "staging", "staged", "trial", "confirmed", "refused", "rolled_back")
LIGHT_SOURCES: tuple[str, ...] = ("programme", "override")
SAMPLE_RATES = (48000, 44100, 32000, 16000)
# interval_s must be a whole number of DSP blocks (125 ms).
INTERVAL_STEP_S = 0.125
# (kind, field) -> the step a number must be a whole multiple of
STEPS = {("config", "interval_s"): INTERVAL_STEP_S}


def _f(
    name: str,
    ftype: int,
    lo: float | None = None,
    hi: float | None = None,
    extra: object = None,
    required: bool = True,
    nullable: bool = False,
) -> tuple[str, int, bool, bool, float | None, float | None, object]:
    return (name, ftype, required, nullable, lo, hi, extra)


def _level(name: str) -> tuple[str, int, bool, bool, float | None, float | None, object]:
    return _f(name, T_LEVEL, LEVEL_MIN, LEVEL_MAX, 2)


_SEQ = _f("seq", T_UINT, 0, UINT_MAX)
_T0 = _f("t0", T_TIME_MS, 0, TIME_MS_MAX)
_T1 = _f("t1", T_TIME_MS, 0, TIME_MS_MAX)

LEVELS = (
    _SEQ,
    _T0,
    _T1,
    _level("laeq"),
    _level("lafmax"),
    _level("lceq"),
    _f("flags", T_FLAGS, extra=FLAGS, required=False),
)

SUMMARY = (
    _SEQ,
    _T0,
    _T1,
    _level("laeq"),
    _level("lafmax"),
    _level("lamin"),
    _level("l10"),
    _level("l50"),
    _level("l90"),
    _level("lceq"),
    _f("peaks", T_UINT, 0, 1000000),
    _f("flags", T_FLAGS, extra=FLAGS, required=False),
)

STATUS = (
    _f("state", T_ENUM, extra=STATES),
    _f("fw", T_TEXT, 1, 32, required=False),
    _f("uptime_s", T_UINT, 0, UINT_MAX, required=False),
    _f("rssi", T_INT, -127, 0, required=False, nullable=True),
    _f("free_mem", T_UINT, 0, UINT_MAX, required=False),
    _f("dsp_load", T_NUM, 0, 100, 4, required=False),
    _f("buffered", T_UINT, 0, UINT_MAX, required=False),
    _f("calibration_offset_db", T_NUM, -20, 20, 2, required=False),
    _f("config_rev", T_UINT, 0, REV_MAX, required=False, nullable=True),
    _f("dropped", T_UINT, 0, UINT_MAX, required=False),
    _f("config_error", T_TEXT, 0, 200, required=False, nullable=True),
    _f("time_synced", T_BOOL, required=False),
    # firmware updates over the air (protocol.ota)
    _f("ota", T_ENUM, required=False, extra=OTA_STATES),
    _f("ota_version", T_TEXT, 1, 32, required=False, nullable=True),
    _f("ota_reason", T_TEXT, 0, 200, required=False, nullable=True),
)
# Texts the sensor builds from what it was sent (a rejected config's reason
# quotes the bad value): encoders cut them to their limit instead of refusing
# the whole status.
CLIPPED_TEXTS = ("config_error", "ota_reason")

# A sensor that says it is online must say how it is; the last will
# {"state":"offline"} carries nothing else.
STATUS_ONLINE_REQUIRED = (
    "fw",
    "uptime_s",
    "free_mem",
    "dsp_load",
    "buffered",
    "calibration_offset_db",
)

CONFIG = (
    _f("rev", T_UINT, 0, REV_MAX),
    _f("interval_s", T_NUM, 1, 60, 3, required=False),
    _f("peak_threshold_db", T_NUM, 30, 140, 2, required=False),
    _f("calibration_offset_db", T_NUM, -20, 20, 2, required=False),
    _f("status_interval_s", T_INT, 10, 3600, required=False),
    _f("backlog_rate", T_INT, 1, 100, required=False),
    _f("sample_rate", T_INT, 16000, 48000, SAMPLE_RATES, required=False),
)
# Config keys the firmware may change remotely (everything but `rev`).
CONFIG_KEYS = tuple(f[NAME] for f in CONFIG[1:])

# kind -> (fields, unknown fields allowed)
MESSAGES: dict[
    str, tuple[tuple[tuple[str, int, bool, bool, float | None, float | None, object], ...], bool]
] = {
    "levels": (LEVELS, True),
    "summary": (SUMMARY, True),
    "status": (STATUS, True),
    "config": (CONFIG, False),
    # light_set, light_state and nudge: protocol.schema_gateway adds them
}
KINDS = ("levels", "summary", "status", "config", "light_set", "light_state", "nudge")


def __getattr__(name: str) -> object:
    # MicroPython: the gateway's tables load when asked for
    if name in ("LIGHT_SET", "LIGHT_STATE", "NUDGE", "TYPE_NAMES"):
        from protocol import schema_gateway

        return getattr(schema_gateway, name)
    raise AttributeError(name)


if sys.implementation.name != "micropython":
    # CPython (gateway, tools): every message's table at once
    from protocol.schema_gateway import LIGHT_SET as LIGHT_SET  # noqa: E402
    from protocol.schema_gateway import LIGHT_STATE as LIGHT_STATE  # noqa: E402
    from protocol.schema_gateway import NUDGE as NUDGE  # noqa: E402
    from protocol.schema_gateway import TYPE_NAMES as TYPE_NAMES  # noqa: E402
