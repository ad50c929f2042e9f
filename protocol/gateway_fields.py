"""The field types only the gateway's messages carry (ids, tokens and
language maps: light set and state, nudge) and the encoders of those
messages and of a config.

Part of `protocol.payloads`, which offers every name here and, on CPython,
loads this module with itself; a MicroPython sensor never loads it.
"""

from protocol.errors import ProtocolError
from protocol.payloads import _bad_type, _raise, _utf8_len, encode
from protocol.schema import HI, NAME, T_ID, T_TOKEN, TYPE
from protocol.topics import valid_id

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are never evaluated there
    pass

_TOKEN_PUNCTUATION = "._:-"


def check(kind: str, f: Any, v: Any) -> Any:
    """Validate value ``v`` of an id, token or language-map field ``f``."""
    name = f[NAME]
    t = f[TYPE]
    vt = type(v)
    if t == T_ID:
        if not valid_id(v):
            raise ProtocolError(
                "bad_id",
                "%s field '%s' is %r; ids are 1 to 32 characters from a-z, 0-9 and '-'"
                % (kind, name, v),
                name,
            )
        return v
    if t == T_TOKEN:
        if not _valid_token(v, f[HI]):
            raise ProtocolError(
                "bad_value",
                "%s field '%s' is %r; use 1 to %d characters from A-Z, a-z, 0-9 and '%s'"
                % (kind, name, v, f[HI], _TOKEN_PUNCTUATION),
                name,
            )
        return v
    # T_LANGMAP
    if vt is not dict:
        return _raise(_bad_type(kind, name, v, "an object of {language: text}"))
    if not v:
        raise ProtocolError(
            "missing_field",
            "%s field '%s' is empty; give the text in at least one language" % (kind, name),
            name,
        )
    for lang in v:
        text = v[lang]
        if not valid_id(lang) or len(lang) > 8:
            raise ProtocolError(
                "bad_value",
                "%s field '%s' has the language %r; use a lower-case tag such as 'nl' or 'en'"
                % (kind, name, lang),
                name,
            )
        if type(text) is not str:
            return _raise(_bad_type(kind, name + "." + lang, text, "a string"))
        n = _utf8_len(kind, name, text)
        if not 1 <= n <= f[HI]:
            raise ProtocolError(
                "out_of_range",
                "%s field '%s.%s' has %d bytes of UTF-8; use 1 to %d"
                % (kind, name, lang, n, f[HI]),
                name,
            )
    return v


def _valid_token(s: str, hi: int) -> bool:
    if not 0 < len(s) <= hi:
        return False
    for c in s:
        if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c in _TOKEN_PUNCTUATION):
            return False
    return True


def encode_config(rev: int, **fields: Any) -> bytes:
    fields["rev"] = rev
    return encode("config", fields)


def encode_light_set(
    cmd_id: str, level: float | None, ramp_s: float, expires_at: int, reason: str, zone: str | None
) -> bytes:
    """``level`` None sends the group back to its programme; ``expires_at`` is UTC epoch s."""
    return encode(
        "light_set",
        {
            "cmd_id": cmd_id,
            "level": level,
            "ramp_s": ramp_s,
            "expires_at": expires_at,
            "reason": reason,
            "zone": zone,
        },
    )


def encode_light_state(level: float | None, source: str, cmd_id: str | None = None) -> bytes:
    return encode("light_state", {"level": level, "source": source, "cmd_id": cmd_id})


def encode_nudge(
    nudge_id: str, zone: str, at: int, laeq: float, kind: str, message: dict[str, str]
) -> bytes:
    """``at`` is UTC epoch ms; ``message`` maps a language tag to the text."""
    return encode(
        "nudge",
        {
            "nudge_id": nudge_id,
            "zone": zone,
            "at": at,
            "laeq": laeq,
            "kind": kind,
            "message": message,
        },
    )
