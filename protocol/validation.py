"""The table-driven checks of a message's fields (`validate`), shared by
`protocol.decoding` (a received payload, once parsed) and the sensor's
checks of the settings it builds itself (hushlight.configcheck: a console
`set`, the end of a calibration, config.json at boot), which need no JSON
decoder.  `protocol.payloads` offers it as ``payloads.validate``.

A module of its own: a MicroPython sensor loads it only when its settings
change, and its code need not stay in the heap in between.
"""

from protocol.errors import ProtocolError
from protocol.payloads import _check, _cross_check, _message
from protocol.schema import NAME, NULLABLE, REQUIRED, T_FLAGS, TYPE

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are never evaluated there
    pass


def validate(kind: str, obj: dict[str, Any], exact: dict[str, Any] | None = None) -> dict[str, Any]:
    """The table-driven checks of message ``kind`` on a dict of its fields,
    parsed from a payload or built by the caller; returns them normalised,
    as ``decode`` does.  ``exact`` (protocol.decoding) maps a number field to
    its exact value (`strictjson.double`), for the checks that a float32
    would get wrong."""
    fields, open_ = _message(kind)
    out = {}
    for f in fields:
        name = f[NAME]
        if name in obj:
            v = obj[name]
            out[name] = None if v is None and f[NULLABLE] else _check(kind, f, v, exact)
        elif f[REQUIRED]:
            raise ProtocolError(
                "missing_field",
                "%s payload lacks the required field '%s'; add it" % (kind, name),
                name,
            )
        else:
            out[name] = [] if f[TYPE] == T_FLAGS else None
    if not open_:
        unknown = [name for name in obj if name not in out]
        if unknown:
            # the first in sorted order: MicroPython's dicts do not keep the
            # payload's order, and both Pythons must name the same field
            name = min(unknown)
            raise ProtocolError(
                "unknown_field",
                "%s payload has the unknown field %r; allowed fields are %s"
                % (kind, name, ", ".join(f[NAME] for f in fields)),
                name,
            )
    _cross_check(kind, out, exact)
    return out
