"""Encode and validate the JSON payloads of the MQTT contract.

``decode_<kind>(data)`` (or ``decode(kind, data)``) takes the raw payload
(bytes, bytearray, memoryview or str) and returns a new dict holding every
field of the message, normalised: numbers of float fields as float, absent
optional fields as ``None`` (``[]`` for flags), unknown extra fields dropped
(they are accepted for forward compatibility, except in config where a typo
must not pass silently).  Anything that breaks the contract raises
`ProtocolError` with a stable ``reason``; nothing else escapes.

``encode_<kind>(...)`` returns compact JSON bytes with the fields in table
order, numbers at their wire resolution (levels at 0.01 dB) and trailing
zeros dropped.  Encoders run the decoder's checks, so what they produce
always decodes; the one leniency is that levels are clamped into 0-160 dB
(a dead microphone yields -inf dB and must still publish its record).

`encode_levels` is the firmware's once-a-second path: plain %-formatting,
flags given as a bitmask (``FLAG_*``) map to preformatted strings.

CPython and MicroPython 1.29 accept and refuse exactly the same payloads:
MicroPython's lenient `json` is preceded by `protocol.strictjson`; CPython's
`json` is told to refuse NaN/Infinity.  The shared vectors in
tests/protocol/vectors/ run under both.  The decoders live in
`protocol.decoding`, loaded on the first decode (a sensor decodes a config
now and then); every name is offered here.

Numbers, on a MicroPython built with float32 (the ESP32's) as on CPython:
a decoded number is checked (range, finiteness, multiples, order) as the
double nearest its text, which `strictjson.double` works out with integers;
an encoded number is read at the 6 significant digits a float32 holds, then
rounded half away from zero to its wire resolution, so the same value gives
the same bytes whichever width of float holds it.
"""

import math
import sys

from protocol.errors import ProtocolError
from protocol.schema import (
    CLIPPED_TEXTS,
    EXTRA,
    FLAGS,
    HI,
    KINDS,
    LEVEL_MAX,
    LEVEL_MIN,
    LO,
    MESSAGES,
    NAME,
    NULLABLE,
    REQUIRED,
    SPAN_MS_MAX,
    STATUS_ONLINE_REQUIRED,
    STEPS,
    T_BOOL,
    T_ENUM,
    T_FLAGS,
    T_ID,
    T_INT,
    T_LANGMAP,
    T_LEVEL,
    T_NUM,
    T_TEXT,
    T_TIME_MS,
    T_TIME_S,
    T_TOKEN,
    T_UINT,
    TIME_MS_MAX,
    TYPE,
    UINT_MAX,
)

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are never evaluated there
    pass

# 10**decimals, and the format of a fixed-point number with that many decimals
_SCALES = (1, 10, 100, 1000, 10000)
# Bits in a float's significand on this port: 53 (double) or 24 (float32).
_MANT_BITS = 53 if 1.0 + 2.0**-52 != 1.0 else 24
_FRACTION_FORMATS = ("%d", "%d.%01d", "%d.%02d", "%d.%03d", "%d.%04d")

# flags bitmask -> its JSON array, each made at its first use and kept, so that
# encoding flags allocates nothing after that (a sensor meets only a few of the
# combinations: all of them made at once would hold a kilobyte of its heap)
_flag_json: "list[str | None]" = ["[]"] + [None] * ((1 << len(FLAGS)) - 1)


def _flags_text(mask: int) -> str:
    text = _flag_json[mask]
    if text is None:
        names = ['"%s"' % FLAGS[b] for b in range(len(FLAGS)) if mask & (1 << b)]
        text = _flag_json[mask] = "[" + ",".join(names) + "]"
    return text


# ---------------------------------------------------------------- decoding


def decode(kind: str, data: object) -> dict[str, Any]:
    """Validate the payload ``data`` of message ``kind`` and return its fields."""
    # the decoder loads on first use (protocol.decoding)
    from protocol import decoding

    return decoding.decode(kind, data)


def _levels_fast(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The decoded levels record when every check passes, else None (protocol.decoding)."""
    from protocol import decoding

    return decoding._levels_fast(obj)


def decode_levels(data: object) -> dict[str, Any]:
    return decode("levels", data)


def decode_summary(data: object) -> dict[str, Any]:
    return decode("summary", data)


def decode_status(data: object) -> dict[str, Any]:
    return decode("status", data)


def decode_config(data: object) -> dict[str, Any]:
    """Validate a remote config; keys absent from it decode as None (keep the current value)."""
    return decode("config", data)


def decode_light_set(data: object) -> dict[str, Any]:
    return decode("light_set", data)


def decode_light_state(data: object) -> dict[str, Any]:
    return decode("light_state", data)


def decode_nudge(data: object) -> dict[str, Any]:
    return decode("nudge", data)


def _message(kind: str) -> tuple[Any, bool]:
    try:
        return MESSAGES[kind]
    except KeyError:
        pass
    if kind not in KINDS:
        raise ProtocolError(
            "unknown_kind",
            "message kind %r does not exist; use one of %s" % (kind, ", ".join(KINDS)),
        )
    # a gateway message on MicroPython: its table loads now (protocol.schema_gateway)
    __import__("protocol.schema_gateway")
    return MESSAGES[kind]


def _json_type(v: object) -> str:
    if v is None:
        return "null"
    t = type(v)
    if t is bool:
        return "boolean"
    if t is int or t is float:
        return "number"
    if t is str:
        return "string"
    if t is list:
        return "array"
    return "object"


def _bad_type(kind: str, name: str, v: object, want: str) -> ProtocolError:
    return ProtocolError(
        "bad_type",
        "%s field '%s' is a %s (%r); it must be %s" % (kind, name, _json_type(v), v, want),
        name,
    )


def _range(kind: str, f: Any, v: Any, unit: str) -> None:
    if v < f[LO] or v > f[HI]:
        raise ProtocolError(
            "out_of_range",
            "%s field '%s' is %r, outside %s..%s%s; send a value in that range"
            % (kind, f[NAME], v, _num(f[LO]), _num(f[HI]), unit),
            f[NAME],
        )


def _num(x: Any) -> str:
    return "%d" % x if x == int(x) else repr(x)


def _check(kind: str, f: Any, v: Any, exact: dict[str, Any] | None = None) -> Any:
    """Validate value ``v`` of field ``f``; return it normalised."""
    name = f[NAME]
    t = f[TYPE]
    vt = type(v)
    if t == T_LEVEL or t == T_NUM:
        unit = " dB" if t == T_LEVEL else ""
        if vt is int:
            # an int compares exactly, and one too big for a float must be
            # refused as out of range, not overflow in float()
            _range(kind, f, v, unit)
            return float(v)
        if vt is not float:
            return _raise(_bad_type(kind, name, v, "a number"))
        if exact is None or name not in exact:
            # x - x is 0 for every finite float, NaN for NaN and +-inf
            # (MicroPython's math may lack isfinite on small ports).
            if v - v != 0:
                raise ProtocolError(
                    "not_finite",
                    "%s field '%s' is %r; send a finite number" % (kind, name, v),
                    name,
                )
            _range(kind, f, v, unit)
            return v
        # the exact value of the number's text (protocol.decoding, loaded: it
        # is the only caller that passes `exact`)
        from protocol.decoding import exact_number

        return exact_number(kind, f, exact[name], unit)
    if t == T_UINT or t == T_INT or t == T_TIME_MS or t == T_TIME_S:
        if vt is not int:
            want = "a whole number of %s" % ("milliseconds" if t == T_TIME_MS else "seconds")
            return _raise(
                _bad_type(kind, name, v, want if t in (T_TIME_MS, T_TIME_S) else "an integer")
            )
        if t == T_TIME_MS or t == T_TIME_S:
            if v < f[LO] or v > f[HI]:
                raise ProtocolError(
                    "bad_time",
                    "%s field '%s' is %r, outside the epoch range up to year 2100; "
                    "send UTC epoch %s" % (kind, name, v, "ms" if t == T_TIME_MS else "s"),
                    name,
                )
        else:
            _range(kind, f, v, "")
        if f[EXTRA] is not None and v not in f[EXTRA]:
            raise ProtocolError(
                "out_of_range",
                "%s field '%s' is %r; use one of %s"
                % (kind, name, v, ", ".join("%d" % c for c in f[EXTRA])),
                name,
            )
        return v
    if t == T_BOOL:
        if vt is not bool:
            return _raise(_bad_type(kind, name, v, "true or false"))
        return v
    if vt is not str and t != T_FLAGS and t != T_LANGMAP:
        return _raise(_bad_type(kind, name, v, "a string"))
    if t == T_ID or t == T_TOKEN or t == T_LANGMAP:
        # the gateway's field types (protocol.gateway_fields): a sensor never loads them
        from protocol import gateway_fields

        return gateway_fields.check(kind, f, v)
    if t == T_TEXT:
        n = _utf8_len(kind, name, v)
        if not f[LO] <= n <= f[HI]:
            raise ProtocolError(
                "out_of_range",
                "%s field '%s' has %d bytes of UTF-8; use %d to %d" % (kind, name, n, f[LO], f[HI]),
                name,
            )
        return v
    if t == T_ENUM:
        if v not in f[EXTRA]:
            raise ProtocolError(
                "bad_value",
                "%s field '%s' is %r; use one of %s" % (kind, name, v, ", ".join(f[EXTRA])),
                name,
            )
        return v
    if t == T_FLAGS:
        if vt is not list:
            return _raise(_bad_type(kind, name, v, "an array of strings"))
        flags_mask(v, kind)
        return v
    return v


def _utf8_len(kind: str, name: str, s: str) -> int:
    """Length of a text in UTF-8 bytes: the same on every port (MicroPython
    may be built without unicode strings, where len() counts bytes)."""
    try:
        return len(s.encode())
    except UnicodeError:
        # CPython: a lone surrogate from a "\ud800" escape, which no store or
        # app could encode later
        raise ProtocolError(
            "bad_value",
            "%s field '%s' holds an unpaired surrogate escape; send valid Unicode text"
            % (kind, name),
            name,
        ) from None


def _raise(err: ProtocolError) -> Any:
    raise err


def flags_mask(flags: object, kind: str = "levels") -> int:
    """Bitmask (``FLAG_*``) of a list of flag names; ProtocolError for unknown or repeated names."""
    mask = 0
    for name in flags:  # type: ignore[attr-defined]  # callers pass a list or tuple
        try:
            bit = 1 << FLAGS.index(name)
        except ValueError:
            raise ProtocolError(
                "bad_value",
                "%s field 'flags' holds %r, not a known flag; flags are %s"
                % (kind, name, ", ".join(FLAGS)),
                "flags",
            ) from None
        if mask & bit:
            raise ProtocolError(
                "bad_value",
                "%s field 'flags' lists %r twice; list each flag once" % (kind, name),
                "flags",
            )
        mask |= bit
    return mask


def _cross_check(kind: str, v: dict[str, Any], exact: dict[str, Any] | None = None) -> None:
    if kind == "levels" or kind == "summary":
        if v["t1"] <= v["t0"] or v["t1"] - v["t0"] > SPAN_MS_MAX:
            raise ProtocolError(
                "bad_time",
                "%s record runs from t0=%r to t1=%r ms; t1 must be after t0, "
                "by at most %d ms" % (kind, v["t0"], v["t1"], SPAN_MS_MAX),
                "t1",
            )
    if kind == "summary":
        if exact is None:
            ordered = v["l10"] >= v["l50"] >= v["l90"]
        else:
            from protocol.decoding import exact_ordered  # (only a decode passes `exact`)

            ordered = exact_ordered(exact)
        if not ordered:
            raise ProtocolError(
                "out_of_range",
                "summary percentiles are l10=%r, l50=%r, l90=%r; they must satisfy "
                "l10 >= l50 >= l90" % (v["l10"], v["l50"], v["l90"]),
                "l50",
            )
    for key in STEPS:
        if key[0] == kind and v[key[1]] is not None:
            step = STEPS[key]
            if exact is None:
                blocks = v[key[1]] / step
                whole = blocks == int(blocks)
            else:
                from protocol.decoding import exact_multiple

                whole = exact_multiple(exact[key[1]][0], step)
            if not whole:
                raise ProtocolError(
                    "out_of_range",
                    "%s field '%s' is %r, not a multiple of %r; round it to a multiple"
                    % (kind, key[1], v[key[1]], step),
                    key[1],
                )
    if kind == "status" and v["state"] == "online":
        for name in STATUS_ONLINE_REQUIRED:
            if v[name] is None:
                raise ProtocolError(
                    "missing_field",
                    "status payload with state 'online' lacks the field '%s'; add it" % name,
                    name,
                )


def _binary(v: float) -> tuple[int, int]:
    """A finite float ``v`` >= 0 as ``(m, e)``, exactly m * 2**e."""
    if v == 0:
        return (0, 0)
    f, e = math.frexp(v)
    # f has at most _MANT_BITS significant bits: scaling by a power of two is exact
    return (int(math.ldexp(f, _MANT_BITS)), e - _MANT_BITS)


def _round_exact(v: float, decimals: int) -> int:
    """``v`` (finite, > 0) read at 6 significant digits, the digits a float32
    holds for sure (the nearest such decimal), then rounded half away from
    zero to ``decimals`` places, times 10**decimals: integer arithmetic on
    the exact binary value."""
    m, e = _binary(v)
    # places that leave 6 significant digits; log10 may miss by one
    places = 5 - int(math.floor(math.log10(v)))
    while True:
        num = m << e if e >= 0 else m
        den = 1 if e >= 0 else 1 << -e
        if places >= 0:
            num *= 10**places
        else:
            den *= 10**-places
        q: int = num // den
        r: int = num % den
        if 2 * r > den or (2 * r == den and q & 1):
            q += 1
        if q >= 1000000:
            places -= 1
        elif q < 100000:
            places += 1
        else:
            break
    if places <= decimals:
        whole: int = q * 10 ** (decimals - places)
        return whole
    p: int = 10 ** (places - decimals)
    n = q // p
    return n + 1 if 2 * (q - n * p) >= p else n


# ---------------------------------------------------------------- encoding


def _fixed(v: Any, decimals: int) -> str:
    """``v`` rounded to ``decimals`` places, without trailing zeros.

    The rule (module doc) is the same with float32 as with doubles: 0.00145
    gives 0.0015 on both, although its double lies below the tie and its
    float32 above.  Integer arithmetic after the rounding, so CPython and
    MicroPython (whose float repr is not shortest-round-trip) print the same
    digits."""
    scale = _SCALES[decimals]
    sign = ""
    if v < 0:
        sign = "-"
        v = -v
    x = v * scale
    n = int(x)
    frac = x - n
    # Far enough from a tie neither the 6-digit reading (5e-6 x at most) nor
    # the product's rounding (x * 2**-24 on float32) can change the result:
    # the common case takes no integer arithmetic.
    margin = x * 1e-5
    if frac > 0.5 + margin:
        n += 1
    elif frac >= 0.5 - margin:
        n = _round_exact(v, decimals)
    frac = n % scale
    if frac == 0:
        text = "%d" % (n // scale)
    else:
        text = _FRACTION_FORMATS[decimals] % (n // scale, frac)
        if frac % 10 == 0:
            text = text.rstrip("0")
    return "-" + text if sign and n else text


def _level(v: Any, kind: str, name: str) -> str:
    if type(v) is not int and type(v) is not float:
        raise _bad_type(kind, name, v, "a number")
    if v != v:
        raise ProtocolError(
            "not_finite", "%s field '%s' is NaN; pass a finite level" % (kind, name), name
        )
    # clamp (see module doc): -inf from digital silence becomes 0 dB
    if v < LEVEL_MIN:
        return "0"
    if v > LEVEL_MAX:
        return "160"
    return _fixed(v, 2)


def clip_utf8(s: str, limit: int) -> str:
    """``s`` cut to at most ``limit`` UTF-8 bytes, at a character boundary."""
    b = s.encode()
    if len(b) <= limit:
        return s
    if limit <= 0:
        return ""
    b = b[:limit]
    # find where the last character starts; drop it if the cut went through it
    k = limit - 1
    while k > 0 and b[k] & 0xC0 == 0x80:
        k -= 1
    lead = b[k]
    need = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    end = k if limit - k < need else limit
    try:
        return str(b[:end], "utf-8")
    except UnicodeError:
        # the text was not valid UTF-8 to begin with (possible on a MicroPython
        # built without unicode strings): keep its ASCII
        return str(bytes(c for c in b[:end] if c < 0x80), "utf-8")


def _jstr(s: str) -> str:
    """JSON string literal of ``s``; identical output on both Pythons (raw UTF-8)."""
    for c in s:
        if c < " " or c == '"' or c == "\\":
            break
    else:
        return '"' + s + '"'
    out = []
    for c in s:
        if c == '"' or c == "\\":
            out.append("\\" + c)
        elif c < " ":
            out.append("\\u%04x" % ord(c))
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _uint(kind: str, name: str, v: Any, hi: int) -> None:
    if type(v) is not int:
        raise _bad_type(kind, name, v, "an integer")
    if v < 0 or v > hi:
        raise ProtocolError(
            "out_of_range" if name == "seq" else "bad_time",
            "%s field '%s' is %r, outside 0..%d" % (kind, name, v, hi),
            name,
        )


def encode_levels(
    seq: int, t0: int, t1: int, laeq: float, lafmax: float, lceq: float, flags: Any = 0
) -> bytes:
    """One interval record.  ``flags``: a ``FLAG_*`` bitmask or a list of flag names."""
    _uint("levels", "seq", seq, UINT_MAX)
    _uint("levels", "t0", t0, TIME_MS_MAX)
    _uint("levels", "t1", t1, TIME_MS_MAX)
    if t1 <= t0 or t1 - t0 > SPAN_MS_MAX:
        _cross_check("levels", {"t0": t0, "t1": t1})  # raises, with the sentence
    if type(flags) is not int:
        flags = flags_mask(flags)
    elif not 0 <= flags < len(_flag_json):
        raise ProtocolError(
            "bad_value",
            "levels field 'flags' is the bitmask %r with unknown bits; combine FLAG_* constants"
            % flags,
            "flags",
        )
    return (
        '{"seq":%d,"t0":%d,"t1":%d,"laeq":%s,"lafmax":%s,"lceq":%s,"flags":%s}'
        % (
            seq,
            t0,
            t1,
            _level(laeq, "levels", "laeq"),
            _level(lafmax, "levels", "lafmax"),
            _level(lceq, "levels", "lceq"),
            _flags_text(flags),
        )
    ).encode()


def encode(kind: str, values: dict[str, Any]) -> bytes:
    """Encode message ``kind`` from a dict of its fields (any order).

    A None value omits an optional field and writes ``null`` for a required
    nullable one.  Unknown keys are refused: they are a caller's typo."""
    fields, open_ = _message(kind)
    names = [f[NAME] for f in fields]
    for name in values:
        if name not in names:
            raise ProtocolError(
                "unknown_field",
                "%s has no field %r; its fields are %s" % (kind, name, ", ".join(names)),
                name,
            )
    checked: dict[str, Any] = {}
    parts = []
    for f in fields:
        name = f[NAME]
        t = f[TYPE]
        v = values.get(name)
        if v is None:
            if not f[REQUIRED]:
                checked[name] = [] if t == T_FLAGS else None
                continue
            if not f[NULLABLE]:
                raise ProtocolError(
                    "missing_field",
                    "%s needs the field '%s'; pass it" % (kind, name),
                    name,
                )
            checked[name] = None
            parts.append('"%s":null' % name)
            continue
        if t == T_LEVEL:
            text = _level(v, kind, name)
            v = float(text)
        else:
            if name in CLIPPED_TEXTS and type(v) is str:
                v = clip_utf8(v, f[HI])
            v = _check(kind, f, v)
            if t == T_NUM:
                text = _fixed(v, f[EXTRA])
            elif t == T_BOOL:
                text = "true" if v else "false"
            elif t == T_FLAGS:
                text = _flags_text(flags_mask(v, kind))
            elif t == T_LANGMAP:
                text = "{" + ",".join(_jstr(k) + ":" + _jstr(v[k]) for k in sorted(v)) + "}"
            elif type(v) is int:
                text = "%d" % v
            else:
                text = _jstr(v)
        checked[name] = v
        parts.append('"' + name + '":' + text)
    _cross_check(kind, checked)
    return ("{" + ",".join(parts) + "}").encode()


def encode_summary(**fields: Any) -> bytes:
    """Fields: seq, t0, t1, laeq, lafmax, lamin, l10, l50, l90, lceq, peaks[, flags]."""
    return encode("summary", fields)


def encode_status(state: str, **fields: Any) -> bytes:
    """``encode_status("offline")`` is the last will; online needs the fields of
    `protocol.schema.STATUS_ONLINE_REQUIRED`."""
    fields["state"] = state
    return encode("status", fields)


def __getattr__(name: str) -> object:
    # MicroPython: the checks of a built dict (a sensor's settings change) and
    # the gateway's encoders load when asked for
    if name == "validate":
        from protocol import validation

        return validation.validate
    if name in ("encode_config", "encode_light_set", "encode_light_state", "encode_nudge"):
        from protocol import gateway_fields

        return getattr(gateway_fields, name)
    raise AttributeError(name)


if sys.implementation.name != "micropython":
    # CPython (gateway, tools): every encoder at once
    from protocol.gateway_fields import encode_config as encode_config  # noqa: E402
    from protocol.gateway_fields import encode_light_set as encode_light_set  # noqa: E402
    from protocol.gateway_fields import encode_light_state as encode_light_state  # noqa: E402
    from protocol.gateway_fields import encode_nudge as encode_nudge  # noqa: E402
    from protocol.validation import validate as validate  # noqa: E402
