"""The decoding half of `protocol.payloads`: a received payload parsed
(strict JSON on both Pythons) and checked against its field table.

`protocol.payloads` offers every name here (``decode``, ``decode_<kind>``),
so callers import that module.  A MicroPython sensor encodes a record every
second but decodes only a config now and then: this module (and
`protocol.strictjson`) is loaded when the first payload is decoded, not with
`protocol.payloads`, and the firmware may drop it again between configs.
"""

import json
import math
import sys

from protocol import MAX_PAYLOAD, strictjson
from protocol.errors import ProtocolError
from protocol.payloads import _MANT_BITS, _binary, _json_type, _message, _num
from protocol.schema import (
    FLAGS,
    HI,
    LEVEL_MAX,
    LEVEL_MIN,
    LO,
    NAME,
    SPAN_MS_MAX,
    TIME_MS_MAX,
    UINT_MAX,
)
from protocol.validation import validate

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are never evaluated there
    pass

_MICROPYTHON = sys.implementation.name == "micropython"
# typed loosely: MicroPython's json (and its stubs) has no parse_constant,
# which only the CPython branch passes
_json_loads: Any = json.loads
# CPython: one decoder built once.  `json.loads(text, parse_constant=...)`
# builds a new JSONDecoder (and its scanner) on every call, which cost more
# than the parse of a levels record; this one behaves the same.
# (MicroPython's json has no JSONDecoder: it keeps `json.loads`.)
_decode_json: Any = None
if not _MICROPYTHON:
    _decode_json = json.JSONDecoder(parse_constant=lambda token: _reject_constant(token)).decode


def decode(kind: str, data: object) -> dict[str, Any]:
    """Validate the payload ``data`` of message ``kind`` and return its fields."""
    _message(kind)  # unknown kinds fail before the payload is looked at
    # MicroPython: the exact value of each number field (see _loads)
    exact: dict[str, Any] | None = {} if _MICROPYTHON else None
    obj = _loads(kind, data, exact)
    if kind == "levels" and exact is None:
        fast = _levels_fast(obj)
        if fast is not None:
            return fast
    return validate(kind, obj, exact)


_ABSENT = object()
_LEVEL_NAMES = ("laeq", "lafmax", "lceq")


def _levels_fast(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The decoded levels record when every check passes, else None.

    The gateway decodes one of these per sensor per second: this path does
    the checks of the field table inline.  It never names a fault: on
    anything unusual it returns None and the table-driven path finds the
    fault and raises (tests compare the two paths)."""
    seq = obj.get("seq")
    t0 = obj.get("t0")
    t1 = obj.get("t1")
    if type(seq) is not int or type(t0) is not int or type(t1) is not int:
        return None
    if not (0 <= seq <= UINT_MAX and 0 <= t0 < t1 <= TIME_MS_MAX and t1 - t0 <= SPAN_MS_MAX):
        return None
    out: dict[str, Any] = {"seq": seq, "t0": t0, "t1": t1}
    for name in _LEVEL_NAMES:
        v: Any = obj.get(name)
        t = type(v)
        if t is float:
            # NaN fails every comparison, so it falls through to the slow path
            if not LEVEL_MIN <= v <= LEVEL_MAX:
                return None
        elif t is int:
            if not LEVEL_MIN <= v <= LEVEL_MAX:
                return None
            v = float(v)
        else:
            return None
        out[name] = v
    flags = obj.get("flags", _ABSENT)
    if flags is _ABSENT:
        flags = []
    elif type(flags) is not list or len(flags) > len(FLAGS):
        return None
    else:
        for i, f in enumerate(flags):
            if f not in FLAGS or f in flags[:i]:
                return None
    out["flags"] = flags
    return out


def _reject_constant(token: str) -> None:
    raise ValueError("JSON has no %s" % token)


def _loads(kind: str, data: object, exact: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parsed payload; with a dict ``exact`` (MicroPython), also the exact
    value of each number member of the object, by key."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        size = len(raw)  # type: ignore[arg-type]  # anything else is refused below
    except TypeError:
        raise ProtocolError(
            "bad_type",
            "%s payload must be bytes or str, not %s" % (kind, type(data).__name__),
        ) from None
    # Size first: never parse (or allocate for) an oversized payload.
    if size > MAX_PAYLOAD:
        raise ProtocolError(
            "too_large",
            "%s payload is %d bytes, over the %d-byte limit; send a smaller message"
            % (kind, size, MAX_PAYLOAD),
        )
    try:
        text = str(raw, "utf-8")  # type: ignore[call-overload]  # bytes-like checked above
        if _MICROPYTHON:
            members: list[tuple[int, int, int, int]] | None = None if exact is None else []
            if not strictjson.valid(raw, members):  # type: ignore[arg-type]
                raise ValueError("not strict JSON")
            obj = json.loads(text)
            if members and exact is not None:
                for ks, ke, vs, ve in members:
                    # the key decoded as json.loads did; a repeated key keeps
                    # its last value there and here
                    key = json.loads(str(raw[ks:ke], "utf-8"))  # type: ignore[index]
                    exact[key] = (
                        strictjson.double(raw, vs, ve),  # type: ignore[arg-type]
                        str(raw[vs:ve], "ascii"),  # type: ignore[index]
                    )
        else:
            # CPython's parser is strict already; only the nesting limit needs
            # the slow scan, and only payloads with enough brackets can break it.
            if text.count("[") + text.count("{") > strictjson.MAX_DEPTH and not strictjson.valid(
                bytes(raw)  # type: ignore[call-overload]
            ):
                raise ValueError("nested too deep")
            if _decode_json is not None:
                obj = _decode_json(text)
            else:
                obj = _json_loads(text, parse_constant=_reject_constant)
    except (ValueError, RuntimeError, TypeError):
        # UnicodeError is a ValueError; RuntimeError covers CPython's
        # RecursionError on deeply nested arrays.
        raise ProtocolError(
            "bad_json",
            "%s payload is not valid UTF-8 JSON (NaN and Infinity are not JSON); "
            "send one JSON object" % kind,
        ) from None
    if type(obj) is not dict:
        raise ProtocolError(
            "bad_type",
            "%s payload is a JSON %s; send one JSON object" % (kind, _json_type(obj)),
        )
    return obj


# ---------------------------------------------------------------- exact numbers
# (MicroPython: the checks of protocol.payloads that a float32 would get wrong,
# on the exact value of a number's text, `strictjson.double`)


def _compare(a: tuple[int, int], b: tuple[int, int]) -> int:
    """Sign of a - b, for exact values ``(m, e)`` = m * 2**e."""
    e = a[1] if a[1] < b[1] else b[1]
    x = a[0] << (a[1] - e)
    y = b[0] << (b[1] - e)
    return (x > y) - (x < y)


def _float(x: tuple[int, int]) -> float:
    """The float of this port nearest the exact value ``x`` = m * 2**e."""
    m, e = x
    a = -m if m < 0 else m
    extra = strictjson.bit_length(a) - _MANT_BITS
    if extra > 0:
        q = a >> extra
        r = a - (q << extra)
        half = 1 << (extra - 1)
        if r > half or (r == half and q & 1):
            q += 1
        a = q
        e += extra
    f = math.ldexp(float(a), e)  # a has at most _MANT_BITS bits: exact
    return -f if m < 0 else f


def exact_number(kind: str, f: Any, exact: tuple[Any, str], unit: str) -> float:
    """Number field ``f`` checked at the exact value of its text; its float."""
    x, text = exact
    name = f[NAME]
    if x is None:
        raise ProtocolError(
            "not_finite",
            "%s field '%s' is %s, too large for a double; send a finite number"
            % (kind, name, text),
            name,
        )
    if _compare(x, (f[LO], 0)) < 0 or _compare(x, (f[HI], 0)) > 0:
        raise ProtocolError(
            "out_of_range",
            "%s field '%s' is %s, outside %s..%s%s; send a value in that range"
            % (kind, name, text, _num(f[LO]), _num(f[HI]), unit),
            name,
        )
    # MicroPython's float32 parser can miss by an ulp (1.12500000000000001
    # gave 1.1249999): the value is the float nearest the double
    return _float(x)


def exact_ordered(exact: dict[str, Any]) -> bool:
    """A summary's l10 >= l50 >= l90, on the exact values."""
    return (
        _compare(exact["l10"][0], exact["l50"][0]) >= 0
        and _compare(exact["l50"][0], exact["l90"][0]) >= 0
    )


def exact_multiple(a: tuple[int, int], step: float) -> bool:
    """Whether the exact value ``a`` is a whole multiple of ``step``."""
    b = _binary(step)
    # on one exponent: whole if it divides
    e = a[1] if a[1] < b[1] else b[1]
    return (a[0] << (a[1] - e)) % (b[0] << (b[1] - e)) == 0
