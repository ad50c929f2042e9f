"""Every part reads a broker URL alike: the gateway's config and MQTT link, provisioning,
the virtual sensor's command line and the sensor's own settings check (MicroPython).

A URL one part accepts and another refuses (or reads to another host or port)
is a sensor and a gateway that cannot meet; the URLs are those of the parser's
own tests (tests/protocol/test_brokerurl.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.mqtt import parse_broker_url
from tests.interpreters import on_interpreter, upy_interpreter  # noqa: F401  (fixtures)
from tests.protocol.test_brokerurl import BAD, GOOD
from tools import provision, sensor, upy
from tools.errors import UsageError

URLS = [*GOOD, *BAD]
Reading = tuple[bool, str, int] | None  # (tls, host, port), None = refused


def gateway_config(url: str) -> Reading:
    raw = {
        "site": {"id": "leuven"},
        "broker": {"url": url},
        "zones": [{"id": "ns", "sensors": ["ns-01"], "light_groups": ["ns-lamps-1"]}],
    }
    try:
        broker = parse_config(raw, source="site.toml").broker
    except ConfigError:
        return None
    return broker.tls, broker.host, broker.port


def gateway_link(url: str) -> Reading:
    try:
        address = parse_broker_url(url)
    except ValueError:
        return None
    return address.tls, address.host, address.port


def provisioning(url: str) -> Reading:
    try:
        scheme, host, port = provision.parse_broker(url)
    except UsageError:
        return None
    return scheme == "mqtts", host, port


# (tls, host, port) of the broker the sensor's `broker` setting names
SENSOR = """
import json
from hushlight import once
from hushlight.errors import ConfigError
for url in json.loads(%r):
    try:
        tls, brokers = once("configcheck").parse_brokers(url)
        print(json.dumps([tls, brokers[0][1], brokers[0][2]] if len(brokers) == 1 else None))
    except ConfigError:
        print("null")
"""


@pytest.mark.parametrize(
    "reader", [gateway_config, gateway_link, provisioning], ids=lambda f: f.__name__
)
def test_the_gateway_and_provisioning_read_every_url_as_the_sensor_does(
    reader: Callable[[str], Reading],
) -> None:
    on_sensor = [
        None if x is None else tuple(x)
        for x in map(json.loads, upy.run_code(SENSOR % json.dumps(URLS)).splitlines())
    ]
    assert len(on_sensor) == len(URLS)
    assert any(x is None for x in on_sensor) and any(x is not None for x in on_sensor)
    differ = [
        (url, reader(url), expected)
        for url, expected in zip(URLS, on_sensor, strict=True)
        if reader(url) != expected
    ]
    assert differ == []


def test_the_virtual_sensor_refuses_what_the_sensor_refuses() -> None:
    on_sensor = [json.loads(x) for x in upy.run_code(SENSOR % json.dumps(URLS)).splitlines()]
    assert len(on_sensor) == len(URLS)
    for url, expected in zip(URLS, on_sensor, strict=True):
        if expected is None:
            with pytest.raises(UsageError):
                sensor._check_broker(url)
        else:
            sensor._check_broker(url)
