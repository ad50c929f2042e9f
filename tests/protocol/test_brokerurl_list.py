"""protocol.brokerurl.parse_list: a sensor's brokers to fail over across, one
URL or several separated by commas, read alike by CPython and MicroPython."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol import brokerurl
from protocol.errors import ProtocolError
from tests.protocol.test_brokerurl import BAD, GOOD
from tools import upy

LISTS = {
    "mqtt://h1:1883,mqtt://h2:1884,mqtt://h3:1885": (
        ("mqtt", "h1", 1883, False),
        ("mqtt", "h2", 1884, False),
        ("mqtt", "h3", 1885, False),
    ),
    "mqtts://n1.city, mqtts://[fd00::5]:8884 ": (
        ("mqtts", "n1.city", 8883, True),
        ("mqtts", "fd00::5", 8884, True),
    ),
    # the same host on two ports, and one host spelled twice with another port
    "mqtt://h:1,mqtt://h:2,mqtt://H": (
        ("mqtt", "h", 1, False),
        ("mqtt", "h", 2, False),
        ("mqtt", "H", 1883, False),
    ),
}

# list -> what the sentence must name
BAD_LISTS = {
    "mqtt://h1:1883,mqtts://h2:8883": ["'mqtts://h2:8883'", "same scheme"],
    "mqtts://h1,mqtt://h2,mqtts://h3": ["'mqtt://h2'", "same scheme"],
    "mqtt://h1,,mqtt://h2": ["empty entry", "number 2"],
    ",mqtt://h1": ["empty entry", "number 1"],
    "mqtt://h1,": ["empty entry", "number 2"],
    "mqtt://h1, ,mqtt://h2": ["empty entry", "number 2"],
    "": ["names no broker"],
    "mqtt://h1,mqtt://h2:0": ["'mqtt://h2:0'", "1..65535"],
    "mqtt://h1,tcp://h2": ["'tcp://h2'", "mqtt://"],
    "mqtt://h1,h2:1883": ["'h2:1883'", "mqtt://"],
    "mqtt://h1:1883,mqtt://H1": ["'mqtt://H1'", "twice"],
    ",".join(f"mqtt://h{i}" for i in range(9)): ["9 brokers", "at most 8"],
}


@pytest.mark.parametrize("text", LISTS)
def test_a_list_gives_each_broker_in_order(text: str) -> None:
    assert brokerurl.parse_list(text) == LISTS[text]


@pytest.mark.parametrize("url", GOOD)
def test_one_url_is_a_list_of_one_read_as_parse_reads_it(url: str) -> None:
    assert brokerurl.parse_list(url) == (brokerurl.parse(url),)


@pytest.mark.parametrize("url", BAD)
def test_one_bad_url_is_refused_with_the_sentence_of_parse(url: str) -> None:
    with pytest.raises(ProtocolError) as alone:
        brokerurl.parse(url)
    with pytest.raises(ProtocolError) as listed:
        brokerurl.parse_list(url)
    assert str(listed.value) == str(alone.value)


@pytest.mark.parametrize("text", BAD_LISTS)
def test_a_bad_list_is_a_sentence_naming_the_entry(text: str) -> None:
    with pytest.raises(ProtocolError) as err:
        brokerurl.parse_list(text)
    assert err.value.reason == "bad_value"
    for needle in BAD_LISTS[text]:
        assert needle in str(err.value), str(err.value)
    assert "give" in str(err.value)


def test_not_a_string_is_refused() -> None:
    with pytest.raises(ProtocolError, match="is not a URL"):
        brokerurl.parse_list(["mqtt://h1", "mqtt://h2"])


RUN = """
import json
from protocol import brokerurl
from protocol.errors import ProtocolError
for text in json.loads(%r):
    try:
        print(json.dumps([list(b) for b in brokerurl.parse_list(text)]))
    except ProtocolError as e:
        print(json.dumps({"reason": e.reason, "message": str(e)}))
"""


def cpython(text: str) -> Any:
    try:
        return [list(b) for b in brokerurl.parse_list(text)]
    except ProtocolError as e:
        return {"reason": e.reason, "message": str(e)}


def test_micropython_reads_every_list_as_cpython_does() -> None:
    texts = [*LISTS, *BAD_LISTS, *GOOD, *BAD]
    out = upy.run_code(RUN % json.dumps(texts)).splitlines()
    assert len(out) == len(texts)
    for text, line in zip(texts, out, strict=True):
        assert json.loads(line) == cpython(text), text
