"""Every message encodes and decodes back to what went in, for generated
field values drawn from the field tables (CPython; the shared vectors cover
MicroPython)."""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import MAX_PAYLOAD, payloads, schema
from tests.protocol.conftest import reading

ID = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=32)
TOKEN = st.text(string.ascii_letters + string.digits + "._:-", min_size=1, max_size=64)


def fit_utf8(s: str, lo: int, hi: int) -> str:
    """``s`` cut to at most ``hi`` UTF-8 bytes (whole characters), padded to ``lo``."""
    s = s.encode()[:hi].decode("utf-8", "ignore")
    return s + "x" * (lo - len(s.encode()))


def value(kind: str, f: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    t, lo, hi, extra = f[schema.TYPE], f[schema.LO], f[schema.HI], f[schema.EXTRA]
    base: st.SearchStrategy[Any]
    if t in (schema.T_UINT, schema.T_INT, schema.T_TIME_MS, schema.T_TIME_S):
        base = st.sampled_from(extra) if extra else st.integers(lo, hi)
    elif t == schema.T_LEVEL:
        base = st.floats(lo, hi)
    elif t == schema.T_NUM:
        step = schema.STEPS.get((kind, f[schema.NAME]))
        if step:
            base = st.integers(int(lo / step), int(hi / step)).map(lambda k: k * step)
        else:
            base = st.floats(lo, hi) | st.integers(int(lo), int(hi))
    elif t == schema.T_ID:
        base = ID
    elif t == schema.T_TOKEN:
        base = TOKEN
    elif t == schema.T_TEXT:
        base = st.text(max_size=hi).map(lambda s: fit_utf8(s, lo, hi))
    elif t == schema.T_ENUM:
        base = st.sampled_from(extra)
    elif t == schema.T_FLAGS:
        base = st.lists(st.sampled_from(extra), unique=True)
    elif t == schema.T_BOOL:
        base = st.booleans()
    else:  # T_LANGMAP
        base = st.dictionaries(
            st.text(string.ascii_lowercase, min_size=2, max_size=8),
            st.text(max_size=40).map(lambda s: fit_utf8(s, 1, hi)),
            min_size=1,
            max_size=3,
        )
    if f[schema.NULLABLE]:
        base = base | st.none()
    if not f[schema.REQUIRED]:
        base = base | st.none()  # None: the field is left out
    return base


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(schema.KINDS))
    fields, _ = schema.MESSAGES[kind]
    values = {str(f[schema.NAME]): draw(value(kind, f)) for f in fields}
    # the rules between fields
    if kind in ("levels", "summary"):
        values["t1"] = values["t0"] + draw(st.integers(1, schema.SPAN_MS_MAX))
        if values["t1"] > schema.TIME_MS_MAX:
            values["t0"] -= schema.SPAN_MS_MAX
            values["t1"] -= schema.SPAN_MS_MAX
    if kind == "summary":
        values["l10"], values["l50"], values["l90"] = sorted(
            (values["l10"], values["l50"], values["l90"]), reverse=True
        )
    if kind == "status" and values["state"] == "online":
        for name in schema.STATUS_ONLINE_REQUIRED:
            if values[name] is None:
                f = next(f for f in fields if f[schema.NAME] == name)
                values[name] = draw(value(kind, f).filter(lambda v: v is not None))
    return kind, values


def close(field: tuple[Any, ...], sent: Any, got: Any) -> bool:
    t = field[schema.TYPE]
    if sent is None:
        return got is None or (t == schema.T_FLAGS and got == [])
    if t == schema.T_LEVEL:
        want = min(max(sent, 0), 160)
        return bool(abs(got - want) <= 0.005 + reading(want) + 1e-9)
    if t == schema.T_NUM:
        return bool(abs(got - sent) <= 0.5 * 10.0 ** -field[schema.EXTRA] + reading(sent) + 1e-9)
    if t == schema.T_FLAGS:
        return sorted(got) == sorted(sent)
    return bool(got == sent) and type(got) is type(sent)


@settings(max_examples=500, deadline=None)
@given(messages())
def test_encode_then_decode_gives_the_fields_back(message: tuple[str, dict[str, Any]]) -> None:
    kind, values = message
    data = payloads.encode(kind, values)
    assert json.loads(data)  # plain JSON any consumer can read
    if len(data) > MAX_PAYLOAD:
        return  # long free texts can exceed the limit; the decoder refuses them (tested elsewhere)
    decoded = payloads.decode(kind, data)
    for f in schema.MESSAGES[kind][0]:
        name = str(f[schema.NAME])
        assert close(f, values[name], decoded[name]), (name, values[name], decoded[name])
