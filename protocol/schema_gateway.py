"""Field tables of the messages a sensor never sees: light set and state
(gateway and lighting) and nudge (gateway and app), and the names of the
field types (for the JSON Schema files).

Part of `protocol.schema`, which offers every name here and, on CPython,
loads this module with itself; a MicroPython sensor never loads it
(`protocol.payloads` does on the first such message).
"""

from protocol.schema import (
    LIGHT_SOURCES,
    MESSAGES,
    T_ENUM,
    T_ID,
    T_LANGMAP,
    T_NUM,
    T_TEXT,
    T_TIME_MS,
    T_TIME_S,
    T_TOKEN,
    T_UINT,
    TIME_MS_MAX,
    TIME_S_MAX,
    TOKEN_MAX,
    UINT_MAX,
    _f,
    _level,
)

TYPE_NAMES = (
    "uint",
    "num",
    "level",
    "time_ms",
    "time_s",
    "id",
    "token",
    "text",
    "enum",
    "flags",
    "bool",
    "int",
    "langmap",
)

LIGHT_SET = (
    _f("cmd_id", T_TOKEN, 1, TOKEN_MAX),
    _f("level", T_NUM, 0, 100, 1, nullable=True),
    _f("ramp_s", T_NUM, 0, 3600, 2),
    _f("expires_at", T_TIME_S, 0, TIME_S_MAX),
    _f("reason", T_TEXT, 1, 64),
    _f("zone", T_ID, nullable=True),
    # the sending gateway's lease on the zone: a controller refuses a command older
    # than the newest epoch it has seen for the group, so a gateway that lost the
    # zone (and does not know it yet) cannot undo its successor's command
    _f("lease_epoch", T_UINT, 0, UINT_MAX, required=False),
)

LIGHT_STATE = (
    _f("level", T_NUM, 0, 100, 1, nullable=True),
    _f("cmd_id", T_TOKEN, 1, TOKEN_MAX, required=False, nullable=True),
    _f("source", T_ENUM, extra=LIGHT_SOURCES),
)

NUDGE = (
    _f("nudge_id", T_TOKEN, 1, TOKEN_MAX),
    _f("zone", T_ID),
    _f("at", T_TIME_MS, 0, TIME_MS_MAX),
    _level("laeq"),
    _f("kind", T_ID),
    _f("message", T_LANGMAP, 1, 500),
)

MESSAGES["light_set"] = (LIGHT_SET, True)
MESSAGES["light_state"] = (LIGHT_STATE, True)
MESSAGES["nudge"] = (NUDGE, True)
