"""Broker URLs and the reconnect back-off shared by the gateway and the lights simulator."""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass

from protocol import brokerurl

__all__ = ["Backoff", "BrokerAddress", "parse_broker_url"]


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    def tls_context(self, ca: str | None = None) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=ca)


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` (`protocol.brokerurl`);
    a `ValueError` (`ProtocolError`) says what is wrong."""
    _scheme, host, port, tls = brokerurl.parse(url)
    return BrokerAddress(host, port, tls)


class Backoff:
    """Capped exponential back-off with full jitter.

    Full jitter (a uniform draw between 0 and the cap of this attempt) spreads
    the reconnects of many gateways after a broker restart instead of having
    them all knock at the same instant.
    """

    def __init__(self, base: float = 0.25, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2.0**self.attempt)
        self.attempt = min(self.attempt + 1, 30)
        return random.uniform(self.base / 2, max(ceiling, self.base / 2))

    def reset(self) -> None:
        self.attempt = 0
