"""MQTT topics of schema version 1 (DESIGN.md, "MQTT contract").

    hushlight/v1/{site}/sensors/{sensor}/levels|summary|status|config
    hushlight/v1/{site}/lights/{group}/set|state
    hushlight/v1/{site}/zones/{zone}/nudge

Ids (site, sensor, group, zone) are ``[a-z0-9-]{1,32}``.  Builders raise
`ProtocolError("bad_id")` for a bad id, so a typo in a sensor's settings is
caught when the topic is built, not when the gateway drops its messages.
"""

from protocol import SCHEMA_VERSION
from protocol.errors import ProtocolError

PREFIX = "hushlight/v%d/" % SCHEMA_VERSION

# topic kind -> leaves allowed under it
LEAVES = {
    "sensors": ("levels", "summary", "status", "config"),
    "lights": ("set", "state"),
    "zones": ("nudge",),
}

# (topic kind, leaf) -> payload kind of protocol.payloads
MESSAGE_KINDS = {
    ("sensors", "levels"): "levels",
    ("sensors", "summary"): "summary",
    ("sensors", "status"): "status",
    ("sensors", "config"): "config",
    ("lights", "set"): "light_set",
    ("lights", "state"): "light_state",
    ("zones", "nudge"): "nudge",
}

ID_MAX = 32


def valid_id(s: object) -> bool:
    """True if ``s`` is a str of 1-32 characters from ``a-z``, ``0-9`` and ``-``."""
    # A hand-written scan: cheaper than `re` on the ESP32, and MicroPython's
    # `re` lacks the `{m,n}` repetition this would need anyway.
    if not isinstance(s, str) or not 0 < len(s) <= ID_MAX:
        return False
    for c in s:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-"):
            return False
    return True


def check_id(what: str, s: object) -> str:
    """Return ``s`` if it is a valid id, else raise ProtocolError("bad_id")."""
    if not valid_id(s):
        raise ProtocolError(
            "bad_id",
            "%s %r is not a valid id; use 1 to 32 characters from a-z, 0-9 and '-'" % (what, s),
            what,
        )
    return s  # type: ignore[return-value]  # valid_id proved it is a str


def root(site: str) -> str:
    return PREFIX + check_id("site", site)


def _topic(site: str, kind: str, what: str, ident: str, leaf: str) -> str:
    return "%s%s/%s/%s/%s" % (PREFIX, check_id("site", site), kind, check_id(what, ident), leaf)


def levels(site: str, sensor: str) -> str:
    return _topic(site, "sensors", "sensor", sensor, "levels")


def summary(site: str, sensor: str) -> str:
    return _topic(site, "sensors", "sensor", sensor, "summary")


def status(site: str, sensor: str) -> str:
    return _topic(site, "sensors", "sensor", sensor, "status")


def ota(site: str, sensor: str, leaf: str) -> str:
    """The sensor's update topic ``ota/{leaf}`` (protocol.ota: offer, get, chunk)."""
    return _topic(site, "sensors", "sensor", sensor, "ota/" + leaf)


def config(site: str, sensor: str) -> str:
    return _topic(site, "sensors", "sensor", sensor, "config")


def light_set(site: str, group: str) -> str:
    return _topic(site, "lights", "group", group, "set")


def light_state(site: str, group: str) -> str:
    return _topic(site, "lights", "group", group, "state")


def nudge(site: str, zone: str) -> str:
    return _topic(site, "zones", "zone", zone, "nudge")


def _wildcard(site: str, kind: str, leaf: str) -> str:
    if site != "+":
        check_id("site", site)
    if leaf != "+" and leaf not in LEAVES[kind]:
        raise ProtocolError(
            "unknown_topic",
            "leaf %r does not exist under %s; use one of %s or '+'"
            % (leaf, kind, ", ".join(LEAVES[kind])),
            "leaf",
        )
    return "%s%s/%s/+/%s" % (PREFIX, site, kind, leaf)


def sensors_wildcard(site: str, leaf: str) -> str:
    """Subscription filter for one leaf of every sensor, e.g.
    ``hushlight/v1/{site}/sensors/+/levels``; ``site`` and ``leaf`` may be ``+``."""
    return _wildcard(site, "sensors", leaf)


def lights_wildcard(site: str, leaf: str) -> str:
    """``hushlight/v1/{site}/lights/+/{leaf}``; ``site`` and ``leaf`` may be ``+``."""
    return _wildcard(site, "lights", leaf)


def zones_wildcard(site: str, leaf: str) -> str:
    """``hushlight/v1/{site}/zones/+/{leaf}``; ``site`` and ``leaf`` may be ``+``."""
    return _wildcard(site, "zones", leaf)


def parse(topic: str) -> tuple[str, str, str, str]:
    """Split a contract topic into ``(site, kind, ident, leaf)``.

    ``kind`` is ``sensors``, ``lights`` or ``zones``; ``ident`` the sensor,
    group or zone id.  Raises ProtocolError ``unknown_topic`` for anything
    outside the contract and ``bad_id`` for a malformed id.
    """
    if not isinstance(topic, str) or not topic.startswith(PREFIX):
        raise ProtocolError(
            "unknown_topic",
            "topic %r does not start with %r; hushlight v1 topics look like "
            "hushlight/v1/SITE/sensors/SENSOR/levels" % (topic, PREFIX),
            "topic",
        )
    parts = topic[len(PREFIX) :].split("/")
    if len(parts) != 4 or parts[1] not in LEAVES or parts[3] not in LEAVES[parts[1]]:
        raise ProtocolError(
            "unknown_topic",
            "topic %r is not part of the hushlight v1 contract; expected "
            "hushlight/v1/SITE/(sensors|lights|zones)/ID/LEAF" % (topic,),
            "topic",
        )
    site, kind, ident, leaf = parts
    check_id("site", site)
    check_id({"sensors": "sensor", "lights": "group", "zones": "zone"}[kind], ident)
    return site, kind, ident, leaf


def message_kind(kind: str, leaf: str) -> str:
    """Payload kind (for `protocol.payloads.decode`) of a parsed topic's kind and leaf."""
    try:
        return MESSAGE_KINDS[(kind, leaf)]
    except KeyError:
        raise ProtocolError(
            "unknown_topic",
            "no message is defined for kind %r with leaf %r; see protocol.topics.MESSAGE_KINDS"
            % (kind, leaf),
            "topic",
        ) from None
