"""protocol.brokerurl: the one broker URL parser, the same under CPython and MicroPython."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from protocol import brokerurl
from protocol.errors import ProtocolError
from tools import upy

GOOD = {
    "mqtt://10.0.0.5": ("mqtt", "10.0.0.5", 1883, False),
    "mqtts://broker.city": ("mqtts", "broker.city", 8883, True),
    "mqtt://127.0.0.1:1884": ("mqtt", "127.0.0.1", 1884, False),
    "mqtts://broker.city:443/": ("mqtts", "broker.city", 443, True),
    "MQTTS://broker.city:1": ("mqtts", "broker.city", 1, True),
    "mqtt://[fd00::5]:1883": ("mqtt", "fd00::5", 1883, False),
    "mqtts://[::1]": ("mqtts", "::1", 8883, True),
    "mqtt://h:65535": ("mqtt", "h", 65535, False),
}

# URL -> what the sentence must name besides the URL itself
BAD = {
    "tcp://x:1": "mqtt://",
    "broker.city:1883": "mqtt://",
    "mqtt://": "no host",
    "mqtt://:1883": "no host",
    "mqtt://h:0": "1..65535",
    "mqtt://h:99999": "1..65535",
    "mqtt://h:": "1..65535",
    "mqtt://h:+1": "1..65535",
    "mqtt://h:1x": "1..65535",
    "mqtt://h/x": "host and a port",
    "mqtt://user:pw@h": "host and a port",
    "mqtt://h?x=1": "host and a port",
    "mqtt://fd00::5": "brackets",
    "mqtt://[fd00::5": "does not close",
    "mqtt://[fd00::5]1883": "[ADDRESS]:PORT",
    "mqtt://[h]:1883": "IPv6 addresses only",
    "mqtt://[]:1883": "no host",
}


@pytest.mark.parametrize("url", GOOD)
def test_a_good_url_gives_scheme_host_port_and_tls(url: str) -> None:
    assert brokerurl.parse(url) == GOOD[url]
    # the standard library reads the same host and port (its default port is None)
    parts = urlsplit(url)
    scheme, host, port, tls = brokerurl.parse(url)
    assert parts.hostname == host.lower()
    assert (parts.port or brokerurl.DEFAULT_PORTS[scheme]) == port
    assert tls is (parts.scheme.lower() == "mqtts")


@pytest.mark.parametrize("url", BAD)
def test_a_bad_url_is_a_sentence_naming_it_and_what_to_give(url: str) -> None:
    with pytest.raises(ProtocolError) as err:
        brokerurl.parse(url)
    assert err.value.reason == "bad_value"
    assert repr(url) in str(err.value) and BAD[url] in str(err.value)
    assert "give" in str(err.value)


def test_not_a_string_is_refused() -> None:
    with pytest.raises(ProtocolError, match="is not a URL"):
        brokerurl.parse(1883)


RUN = """
import json
from protocol import brokerurl
from protocol.errors import ProtocolError
for url in json.loads(%r):
    try:
        print(json.dumps(list(brokerurl.parse(url))))
    except ProtocolError as e:
        print(json.dumps({"reason": e.reason, "message": str(e)}))
"""


def cpython(url: str) -> Any:
    try:
        return list(brokerurl.parse(url))
    except ProtocolError as e:
        return {"reason": e.reason, "message": str(e)}


def test_micropython_parses_every_url_as_cpython_does() -> None:
    urls = [*GOOD, *BAD]
    out = upy.run_code(RUN % json.dumps(urls)).splitlines()
    assert len(out) == len(urls)
    for url, line in zip(urls, out, strict=True):
        assert json.loads(line) == cpython(url), url
