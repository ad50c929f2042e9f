"""The release side of protocol.ota, for the tools (CPython) only: a manifest
written and read whole, a release key's text, the topics and chunk framing
of a transfer.  Kept apart from protocol.ota, which the sensor loads while
an update runs: there every kilobyte of code is heap the update needs
(protocol.ota re-exports these names on CPython).
"""

from typing import Any

from protocol import topics
from protocol.errors import ProtocolError
from protocol.ota import KEY_MAGIC, MAGIC, MANIFEST_MAX, check_path, parse_line, parse_version


def _bad(msg: str) -> ProtocolError:
    return ProtocolError("bad_value", msg)


# ---- manifest -----------------------------------------------------------------


def encode_manifest(
    version: str, min_version: str, mpy: int, files: "list[tuple[str, int, str]]"
) -> bytes:
    """The manifest's bytes for `files`, a list of (path, size, sha256 hex)."""
    parse_version(version)
    parse_version(min_version)
    lines = [MAGIC, "version " + version, "min_version " + min_version, "mpy %d" % mpy]
    for path, size, digest in files:
        lines.append("file %s %d %s" % (check_path(path), size, digest))
    text = "\n".join(lines) + "\n"
    for line in lines:
        parse_line(line)
    if len(text) > MANIFEST_MAX:
        raise _bad("the manifest takes %d bytes, over %d" % (len(text), MANIFEST_MAX))
    return text.encode()


def parse_manifest(text: str) -> "dict[str, Any]":
    """The whole manifest (str) as a dict: version, min_version, mpy, files
    [(path, size, sha256 hex)]; ProtocolError if it is not one.  (The sensor
    reads its manifest line by line with `parse_line` instead.)"""
    lines = text.split("\n")
    if lines[-1] != "":
        raise _bad("the manifest does not end with a line feed")
    items = [parse_line(line) for line in lines[:-1]]
    out: "dict[str, Any]" = {"files": []}
    if not items or items[0] != ("magic",):
        raise _bad("the manifest does not start with %r" % MAGIC)
    for item in items[1:]:
        if item[0] == "file":
            out["files"].append(item[1:])
        elif item[0] in out or item[0] == "magic":
            raise _bad("the manifest has %r twice" % item[0])
        else:
            out[item[0]] = item[1]
    for key in ("version", "min_version", "mpy"):
        if key not in out:
            raise _bad("the manifest has no %r line" % key)
    return out


# ---- release key --------------------------------------------------------------


def encode_public_key(n: int, e: int = 65537) -> str:
    """The text of a sensor's `release.pub` for the RSA public key (n, e)."""
    return "%s\ne %d\nn %x\n" % (KEY_MAGIC, e, n)


# ---- topics and chunks --------------------------------------------------------


def topic(site: str, sensor: str, leaf: str) -> str:
    """The sensor's OTA topic `leaf` ("offer", "get" or "chunk")."""
    return topics.ota(site, sensor, leaf)


def chunk(offset: int, data: bytes) -> bytes:
    """A chunk message: `offset` as 4 bytes big-endian, then `data`."""
    return offset.to_bytes(4, "big") + data


def chunk_offset(payload: bytes) -> int:
    """The offset a chunk message carries (its data is payload[4:])."""
    if len(payload) < 4:
        raise _bad("a chunk of %d bytes has no offset" % len(payload))
    return int.from_bytes(payload[:4], "big")
