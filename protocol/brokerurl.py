"""Broker URLs: ``mqtt://HOST[:PORT]`` and ``mqtts://HOST[:PORT]`` (TLS).

The one parser of the sensor, the gateway and the tools, so that a URL one of
them accepts is never refused by another.  The port defaults to 1883 for
mqtt:// and 8883 for mqtts://; an IPv6 address goes in brackets
(``mqtt://[fd00::5]:1883``); a trailing ``/`` is allowed, nothing else after
the port (no path, query, user or password: credentials are settings of
their own).  Written for MicroPython too: plain string scans, no urllib.

A sensor's `broker` setting may list several brokers to fail over across,
separated by commas (``mqtt://h1:1883,mqtt://h2:1884``): `parse_list` reads
such a list, one URL being a list of one.
"""

from protocol.errors import ProtocolError

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
EXAMPLE = "mqtt://HOST:PORT or mqtts://HOST:PORT"
LIST_EXAMPLE = "mqtt://HOST1:PORT,mqtt://HOST2:PORT"
# brokers of one list at most: each one costs the sensor heap
MAX_BROKERS = 8


def parse(url: object) -> tuple[str, str, int, bool]:
    """(scheme, host, port, tls) of a broker URL; `ProtocolError` ("bad_value")
    with a sentence naming the URL and what to give instead."""
    if not isinstance(url, str):
        raise _bad("broker %r is not a URL; give %s" % (url, EXAMPLE))
    cut = url.find("://")
    scheme = url[:cut].lower() if cut > 0 else ""
    if scheme not in DEFAULT_PORTS:
        raise _bad("broker %r has an unknown scheme; give %s" % (url, EXAMPLE))
    rest = url[cut + 3 :]
    if rest.endswith("/"):
        rest = rest[:-1]
    for c in "/?#@ ":
        if c in rest:
            raise _bad(
                "broker %r holds more than a host and a port (%r); give %s" % (url, c, EXAMPLE)
            )
    port = DEFAULT_PORTS[scheme]
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise _bad(
                "broker %r opens an IPv6 address with [ but does not close it; "
                "give mqtt://[ADDRESS]:PORT" % url
            )
        host = rest[1:end]
        after = rest[end + 1 :]
        if after:
            if after[0] != ":":
                raise _bad(
                    "broker %r has %r after the address; give mqtt://[ADDRESS]:PORT" % (url, after)
                )
            port = _port(url, after[1:])
        if host and ":" not in host:
            raise _bad(
                "broker %r puts %r in brackets, which are for IPv6 addresses only; "
                "give mqtt://%s:PORT" % (url, host, host)
            )
    else:
        host = rest
        colon = rest.find(":")
        if colon >= 0:
            if rest.find(":", colon + 1) >= 0:
                raise _bad(
                    "broker %r has more than one ':'; an IPv6 address goes in brackets: "
                    "give mqtt://[ADDRESS]:PORT such as mqtt://[fd00::5]:1883" % url
                )
            host = rest[:colon]
            port = _port(url, rest[colon + 1 :])
    if not host:
        raise _bad("broker %r names no host; give %s" % (url, EXAMPLE))
    return scheme, host, port, scheme == "mqtts"


def parse_list(text: object) -> tuple[tuple[str, str, int, bool], ...]:
    """(scheme, host, port, tls) of each broker of a comma-separated list, in
    its order; spaces around an entry are ignored.  Every broker must have
    the same scheme (a sensor pins one CA, or speaks plain MQTT to all) and
    appear once.  `ProtocolError` ("bad_value") naming the bad entry."""
    if not isinstance(text, str):
        raise _bad("broker %r is not a URL; give %s" % (text, EXAMPLE))
    entries = text.split(",")
    if len(entries) > MAX_BROKERS:
        raise _bad(
            "broker %r lists %d brokers; give at most %d" % (text, len(entries), MAX_BROKERS)
        )
    out: list[tuple[str, str, int, bool]] = []
    for n, entry in enumerate(entries):
        url = entry.strip()
        if not url and len(entries) == 1:
            raise _bad("broker %r names no broker; give %s" % (text, EXAMPLE))
        if not url:
            raise _bad(
                "broker %r has an empty entry (number %d); give URLs separated by single "
                "commas, such as %s" % (text, n + 1, LIST_EXAMPLE)
            )
        b = parse(url)
        if out and b[0] != out[0][0]:
            raise _bad(
                "broker %r is %s:// but the list begins with %s://; give every broker of "
                "the list with the same scheme" % (url, b[0], out[0][0])
            )
        for seen in out:
            if seen[1].lower() == b[1].lower() and seen[2] == b[2]:
                raise _bad("broker %r is in the list twice; give each broker once" % url)
        out.append(b)
    return tuple(out)


def _port(url: str, text: str) -> int:
    port = int(text) if text.isdigit() and len(text) <= 5 else -1
    if not 0 < port < 65536:
        raise _bad("broker %r has a bad port %r; give a port in 1..65535" % (url, text))
    return port


def _bad(message: str) -> ProtocolError:
    return ProtocolError("bad_value", message)
