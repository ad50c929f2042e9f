"""protocol/topics.py: builders, wildcards and the parser, under CPython and MicroPython."""

from __future__ import annotations

from typing import Any

import pytest

from protocol import topics
from protocol.errors import ProtocolError
from tests.protocol.conftest import load, vector_id

VECTORS = load("topics")


def cpython_parse(topic: str) -> dict[str, Any]:
    try:
        site, kind, ident, leaf = topics.parse(topic)
        return {
            "ok": True,
            "parts": [site, kind, ident, leaf],
            "message": topics.message_kind(kind, leaf),
        }
    except ProtocolError as e:
        return {"ok": False, "reason": e.reason}


def check(v: dict[str, Any], got: dict[str, Any]) -> None:
    assert got["ok"] is v["ok"], got
    if v["ok"]:
        assert got["parts"] == v["parts"]
        assert got["message"] == v["message"]
    else:
        assert got["reason"] == v["reason"]


@pytest.mark.parametrize("v", VECTORS, ids=vector_id)
def test_parse_cpython(v: dict[str, Any]) -> None:
    check(v, cpython_parse(v["topic"]))


@pytest.mark.parametrize("v", VECTORS, ids=vector_id)
def test_parse_micropython(v: dict[str, Any], upy_results: dict[str, dict[str, Any]]) -> None:
    check(v, upy_results["topic " + vector_id(v)])


@pytest.mark.parametrize("v", [v for v in VECTORS if v["ok"]], ids=vector_id)
def test_builders_make_what_parse_reads(v: dict[str, Any]) -> None:
    site, _kind, ident, _leaf = v["parts"]
    builder = getattr(topics, v["message"])
    assert builder(site, ident) == v["topic"]


def test_root_and_wildcards() -> None:
    assert topics.root("leuven") == "hushlight/v1/leuven"
    assert topics.sensors_wildcard("leuven", "levels") == "hushlight/v1/leuven/sensors/+/levels"
    assert topics.sensors_wildcard("+", "+") == "hushlight/v1/+/sensors/+/+"
    assert topics.lights_wildcard("gent", "state") == "hushlight/v1/gent/lights/+/state"
    assert topics.zones_wildcard("gent", "nudge") == "hushlight/v1/gent/zones/+/nudge"


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: topics.levels("Leuven", "s1"), "bad_id"),
        (lambda: topics.levels("leuven", ""), "bad_id"),
        (lambda: topics.levels("leuven", "a" * 33), "bad_id"),
        (lambda: topics.light_set("leuven", "g/1"), "bad_id"),
        (lambda: topics.nudge("leuven", "#"), "bad_id"),
        (lambda: topics.root("+"), "bad_id"),
        (lambda: topics.sensors_wildcard("leuven", "set"), "unknown_topic"),
        (lambda: topics.sensors_wildcard("leu#", "levels"), "bad_id"),
        (lambda: topics.message_kind("zones", "state"), "unknown_topic"),
    ],
)
def test_bad_ids_and_leaves(call: Any, reason: str) -> None:
    with pytest.raises(ProtocolError) as e:
        call()
    assert e.value.reason == reason
    assert "'" in str(e.value)  # the sentence quotes the offending value


def test_valid_id_matches_the_contract_regex() -> None:
    import re

    pattern = re.compile(r"[a-z0-9-]{1,32}")
    samples = ["a", "-", "a-b", "A", "é", "a b", "a_b", "a" * 32, "a" * 33, "", "0-9", "x\n"]
    samples += [chr(c) for c in range(128)]
    for s in samples:
        assert topics.valid_id(s) is bool(pattern.fullmatch(s)), repr(s)
    assert not topics.valid_id(5)
    assert not topics.valid_id(None)
