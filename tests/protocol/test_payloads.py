"""protocol/payloads.py against the shared vectors, under CPython and MicroPython."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from protocol import MAX_PAYLOAD, payloads, schema
from protocol.errors import REASONS, ProtocolError
from tests.protocol.conftest import (
    decode_vectors,
    load,
    number,
    payload_bytes,
    reading,
    same,
    vector_id,
)

DECODE = decode_vectors()
ENCODE = load("encode")


def cpython_decode(v: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"ok": True, "fields": payloads.decode(v["kind"], payload_bytes(v))}
    except ProtocolError as e:
        return {"ok": False, "reason": e.reason, "field": e.field, "message": str(e)}


def check_decoded(v: dict[str, Any], got: dict[str, Any]) -> None:
    assert got["ok"] is v["ok"], got
    if not v["ok"]:
        assert got["reason"] == v["reason"], got
        assert got["reason"] in REASONS
        if "field" in v:
            assert got["field"] == v["field"], got
            # the sentence names the offending field
            assert v["field"].split(".")[0] in got["message"]
        return
    fields = got["fields"]
    # every field of the message is present, nothing else
    names = [str(f[schema.NAME]) for f in schema.MESSAGES[v["kind"]][0]]
    assert sorted(fields) == sorted(names)
    for name, expected in v.get("fields", {}).items():
        assert same(expected, fields[name]), (name, expected, fields[name])


@pytest.mark.parametrize("v", DECODE, ids=vector_id)
def test_decode_cpython(v: dict[str, Any]) -> None:
    check_decoded(v, cpython_decode(v))


@pytest.mark.parametrize("v", DECODE, ids=vector_id)
def test_decode_micropython(v: dict[str, Any], upy_results: dict[str, dict[str, Any]]) -> None:
    got = upy_results["decode " + vector_id(v)]
    check_decoded(v, got)
    # and the firmware's result is the gateway's, field for field
    cpython = cpython_decode(v)
    if v["ok"]:
        assert same(cpython["fields"], got["fields"])
    else:
        assert (got["reason"], got["field"]) == (cpython["reason"], cpython["field"])


CONFIG_OBJECTS = [
    v
    for v in DECODE
    if v["kind"] == "config"
    and "payload" in v
    and "@" not in v["payload"]
    and isinstance(json.loads(v["payload"] or "null", parse_constant=str), dict)
]


@pytest.mark.parametrize("v", CONFIG_OBJECTS, ids=vector_id)
def test_validate_of_a_built_dict_is_decode_without_the_json(v: dict[str, Any]) -> None:
    # the sensor checks a `set` or a calibration as a dict (configcheck.check_remote)
    obj = json.loads(v["payload"], parse_constant=str)
    try:
        got = {"ok": True, "fields": payloads.validate("config", obj)}
    except ProtocolError as e:
        got = {"ok": False, "reason": e.reason, "field": e.field, "message": str(e)}
    if v["ok"] or v["reason"] != "bad_json":  # a dict has no JSON to be wrong
        check_decoded(v, got)


def cpython_encode(v: dict[str, Any], fast: bool = False) -> dict[str, Any]:
    fields = {k: number(x) for k, x in v["fields"].items()}
    try:
        data = payloads.encode_levels(**fields) if fast else payloads.encode(v["kind"], fields)
        return {"ok": True, "payload": data.decode()}
    except ProtocolError as e:
        return {"ok": False, "reason": e.reason, "field": e.field, "message": str(e)}


def check_encoded(v: dict[str, Any], got: dict[str, Any]) -> None:
    if "reason" in v:
        assert not got["ok"] and got["reason"] == v["reason"], got
        return
    assert got["ok"], got
    assert got["payload"] == v["payload"]


@pytest.mark.parametrize("v", ENCODE, ids=vector_id)
def test_encode_cpython(v: dict[str, Any]) -> None:
    check_encoded(v, cpython_encode(v))
    if v["kind"] == "levels":
        check_encoded(v, cpython_encode(v, fast=True))
    if "payload" in v:
        # what the encoder writes, the decoder accepts
        payloads.decode(v["kind"], v["payload"].encode())


@pytest.mark.parametrize("v", ENCODE, ids=vector_id)
def test_encode_micropython(v: dict[str, Any], upy_results: dict[str, dict[str, Any]]) -> None:
    check_encoded(v, upy_results["encode " + vector_id(v)])
    if v["kind"] == "levels":
        check_encoded(v, upy_results["fast " + vector_id(v)])


def test_decode_accepts_every_bytes_like_and_str() -> None:
    raw = b'{"state":"offline"}'
    for data in (raw, bytearray(raw), memoryview(raw), raw.decode()):
        assert payloads.decode_status(data)["state"] == "offline"


def test_decode_refuses_non_bytes() -> None:
    with pytest.raises(ProtocolError) as e:
        payloads.decode("status", 5)
    assert e.value.reason == "bad_type"


def test_size_limit_counts_utf8_bytes_of_str_input() -> None:
    # 700 three-byte characters: 2100 bytes although only ~730 characters
    text = '{"state":"offline","x":"' + "\u20ac" * 700 + '"}'
    assert len(text) < MAX_PAYLOAD < len(text.encode())
    with pytest.raises(ProtocolError) as e:
        payloads.decode_status(text)
    assert e.value.reason == "too_large"


def test_unpaired_surrogate_escape_in_text_is_refused() -> None:
    # CPython decodes "\ud800" to a str no store can encode back to UTF-8;
    # the gateway must not be handed one (MicroPython keeps the bytes, and the
    # firmware decodes no text, so this check is CPython's alone)
    for fw in ('"\\ud800"', '"a\\udc00b"'):
        with pytest.raises(ProtocolError) as e:
            payloads.decode_status(b'{"state":"offline","fw":' + fw.encode() + b"}")
        assert (e.value.reason, e.value.field) == ("bad_value", "fw")
    # a proper pair is one character, four bytes
    d = payloads.decode_status(b'{"state":"offline","fw":"\\ud83d\\ude00"}')
    assert d["fw"] == "\U0001f600"


def test_oversized_payload_is_refused_before_parsing() -> None:
    # not JSON at all: the size check must win over the syntax check
    with pytest.raises(ProtocolError) as e:
        payloads.decode_levels(b"\xff" * (MAX_PAYLOAD + 1))
    assert e.value.reason == "too_large"


def test_every_decoder_matches_decode() -> None:
    for kind in schema.KINDS:
        assert getattr(payloads, f"decode_{kind}") is not None
    raw = load("status")[1]["payload"].encode()
    assert payloads.decode_status(raw) == payloads.decode("status", raw)


def test_levels_round_trip_within_half_a_hundredth() -> None:
    # independent oracle: the decoded level is the input to within 0.005 dB,
    # plus the 6-digit reading
    for i in range(2000):
        x = i * 0.0799 + 0.0003  # up to 159.7 dB, inside the range
        data = payloads.encode_levels(i, 1000 * i, 1000 * i + 1000, x, 160 - x, x / 2)
        d = payloads.decode_levels(data)
        assert abs(d["laeq"] - x) <= 0.005 + reading(x) + 1e-9
        assert abs(d["lafmax"] - (160 - x)) <= 0.005 + reading(160 - x) + 1e-9
        assert abs(d["lceq"] - x / 2) <= 0.005 + reading(x / 2) + 1e-9
        assert d["seq"] == i


def test_decimal_ties_round_away_from_zero_whatever_the_float() -> None:
    # 0.00145 lies below the tie as a double and above it as a float32; the
    # wire reads it at 6 digits first, so both give 0.0015 (and -1.005 -1.01)
    f32 = struct.Struct("<f")
    online = {"state": "online", "fw": "1", "uptime_s": 0, "free_mem": 0, "buffered": 0}
    for dsp_load, offset, want_load, want_offset in (
        (0.00145, -1.005, "0.0015", "-1.01"),
        (0.00135, 1.005, "0.0014", "1.01"),
        (0.00125, 0.125, "0.0013", "0.13"),
    ):
        for width in ("double", "float32"):
            if width == "float32":
                dsp_load = f32.unpack(f32.pack(dsp_load))[0]
                offset = f32.unpack(f32.pack(offset))[0]
            fields = {**online, "dsp_load": dsp_load, "calibration_offset_db": offset}
            got = json.loads(payloads.encode("status", fields), parse_float=str)
            assert (got["dsp_load"], got["calibration_offset_db"]) == (want_load, want_offset), (
                width
            )


def test_levels_flags_bitmask_and_names_agree() -> None:
    for mask in range(1 << len(schema.FLAGS)):
        names = [f for b, f in enumerate(schema.FLAGS) if mask & (1 << b)]
        by_mask = payloads.encode_levels(1, 0, 1000, 50, 60, 70, mask)
        by_names = payloads.encode_levels(1, 0, 1000, 50, 60, 70, list(reversed(names)))
        assert by_mask == by_names
        assert json.loads(by_mask)["flags"] == names
    assert schema.FLAG_CLIPPED | schema.FLAG_OVERLOAD == 0b1001
    with pytest.raises(ProtocolError) as e:
        payloads.encode_levels(1, 0, 1000, 50, 60, 70, 16)
    assert e.value.reason == "bad_value"


def test_encode_levels_silence_is_zero_db_and_nan_is_refused() -> None:
    d = json.loads(payloads.encode_levels(5, 0, 1000, -math.inf, math.inf, 0.0))
    assert (d["laeq"], d["lafmax"], d["lceq"]) == (0, 160, 0)
    with pytest.raises(ProtocolError) as e:
        payloads.encode_levels(5, 0, 1000, math.nan, 1.0, 1.0)
    assert (e.value.reason, e.value.field) == ("not_finite", "laeq")


def test_encode_levels_refuses_bad_times_and_seq() -> None:
    for args, reason in (
        ((1, 1000, 1000), "bad_time"),
        ((1, 2000, 1000), "bad_time"),
        ((-1, 0, 1000), "out_of_range"),
        ((True, 0, 1000), "bad_type"),
        ((1, 0.0, 1000), "bad_type"),
    ):
        with pytest.raises(ProtocolError) as e:
            payloads.encode_levels(*args, 50, 60, 70)  # type: ignore[call-arg]  # bad values on purpose
        assert e.value.reason == reason, args


def test_status_helpers() -> None:
    assert payloads.encode_status("offline") == b'{"state":"offline"}'
    cfg = payloads.encode_config(7, interval_s=2)
    assert payloads.decode_config(cfg)["interval_s"] == 2.0
    assert payloads.decode_config(cfg)["rev"] == 7


def test_config_keys_are_the_config_table() -> None:
    assert schema.CONFIG_KEYS == (
        "interval_s",
        "peak_threshold_db",
        "calibration_offset_db",
        "status_interval_s",
        "backlog_rate",
        "sample_rate",
    )


def test_unknown_kind() -> None:
    with pytest.raises(ProtocolError) as e:
        payloads.encode("weather", {})
    assert e.value.reason == "unknown_kind"


# values around every boundary of the levels table, and wrong types
_odd_values = st.one_of(
    st.integers(-2, 3),
    st.sampled_from([0.0, 159.99, 160, 160.0, 160.01, -0.0, 1e999, -1e999, math.nan]),
    st.floats(-10, 170),
    st.sampled_from([None, True, False, "50", [], {}, "clipped", ["loud"], [1], ["clipped"] * 2]),
    st.sampled_from([1000, 3601000, 3601001, schema.TIME_MS_MAX, schema.TIME_MS_MAX + 1]),
    st.sampled_from([schema.UINT_MAX, schema.UINT_MAX + 1, -1, 2.0]),
)
_levels = st.one_of(st.floats(0, 160), st.integers(0, 160))


@st.composite
def levels_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A valid levels record, then up to two fields removed or spoilt."""
    t0 = draw(st.integers(0, schema.TIME_MS_MAX - schema.SPAN_MS_MAX))
    obj: dict[str, Any] = {
        "seq": draw(st.integers(0, schema.UINT_MAX)),
        "t0": t0,
        "t1": t0 + draw(st.integers(1, schema.SPAN_MS_MAX)),
        "laeq": draw(_levels),
        "lafmax": draw(_levels),
        "lceq": draw(_levels),
    }
    if draw(st.booleans()):
        obj["flags"] = draw(st.lists(st.sampled_from(schema.FLAGS), unique=True))
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from([*obj, "flags", "extra"]))
        if draw(st.booleans()):
            obj.pop(key, None)
        else:
            obj[key] = draw(_odd_values)
    return obj


@settings(max_examples=600, deadline=None)
@given(levels_objects())
def test_levels_fast_path_agrees_with_the_field_table(obj: dict[str, Any]) -> None:
    fast = payloads._levels_fast(obj)
    try:
        slow = payloads.validate("levels", obj)
    except ProtocolError:
        assert fast is None
        return
    # everything valid takes the fast path, with the same result
    assert fast is not None, obj
    assert same(slow, fast)
    event("valid record")


def test_levels_fast_path_takes_the_common_record() -> None:
    raw = payloads.encode_levels(7, 1000, 2000, 50.5, 60, 0.0, schema.FLAG_CLIPPED)
    fast = payloads._levels_fast(json.loads(raw))
    assert fast is not None
    assert fast == payloads.validate("levels", json.loads(raw))


def test_levels_fast_path_checks_every_field_of_the_table() -> None:
    # a field added to the table and not to the fast path fails here
    names = sorted(f[0] for f in schema.LEVELS)
    obj = json.loads(payloads.encode_levels(7, 1000, 2000, 50.5, 60, 0.0, schema.FLAG_CLIPPED))
    assert sorted(obj) == names
    fast = payloads._levels_fast(obj)
    assert fast is not None and sorted(fast) == names
    for name, _type, required, *_ in schema.LEVELS:
        with pytest.raises(ProtocolError):
            payloads.validate("levels", {**obj, name: "spoilt"})
        assert payloads._levels_fast({**obj, name: "spoilt"}) is None, name
        gone = {k: v for k, v in obj.items() if k != name}
        if required:
            assert payloads._levels_fast(gone) is None, name
        else:
            assert same(payloads._levels_fast(gone), payloads.validate("levels", gone)), name


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120), st.integers(0, 200))
def test_clip_utf8_keeps_whole_characters_within_the_limit(text: str, limit: int) -> None:
    clipped = payloads.clip_utf8(text, limit)
    assert len(clipped.encode()) <= limit
    assert text.startswith(clipped)
    # nothing more could have been kept: the next character would not fit
    if clipped != text:
        assert len((clipped + text[len(clipped)]).encode()) > limit


def test_a_long_config_error_is_clipped_not_refused() -> None:
    reason = "config rev 4 rejected: unknown key " + repr("\u00e9" * 300)
    status = payloads.encode_status(
        "online",
        fw="0.1.0",
        uptime_s=1,
        free_mem=1,
        dsp_load=0.1,
        buffered=0,
        calibration_offset_db=0,
        config_error=reason,
    )
    got = payloads.decode_status(status)["config_error"]
    assert reason.startswith(got)
    assert len(got.encode()) <= 200
    # other texts are not clipped: a too long fw is the caller's mistake
    with pytest.raises(ProtocolError):
        payloads.encode_status("offline", fw="x" * 33)
