"""Firmware updates over the air: the release manifest, its signature, the transfer.

Imported by the sensor (MicroPython, loaded only while an update runs) and by
the release and roll-out tools (CPython); the format is defined here once.

Topics, under ``hushlight/v1/{site}/sensors/{sensor}/``:

    ota/offer   tool -> sensor, QoS 1, never retained: JSON
                {"version": "0.2.0", "size": <manifest bytes>,
                 "total": <release bytes>, "sig": <base64 signature>}
                or {"cancel": true} to drop a staging in progress
    ota/get     sensor -> tool, QoS 0: JSON
                {"version": "0.2.0", "offset": <byte>, "length": <bytes>}
    ota/chunk   tool -> sensor, QoS 0: 4 bytes big-endian offset, then the
                release's bytes from that offset (at most CHUNK); a chunk with
                no bytes says the release ends at that offset

A release, as transferred, is its manifest text (``size`` bytes) followed by
the files in manifest order.  The sensor asks for at most WINDOW bytes at a
time from the first byte it does not have yet, so a dropped link or a reboot
resumes where it stopped, and a tool that goes away costs nothing but time.

The manifest is ASCII text, one item a line, LF-terminated::

    hushlight-release 1
    version 0.2.0
    min_version 0.1.0
    mpy 1798
    file hushlight/app.mpy 4211 <sha256 as 64 hex digits>
    ...

``min_version``: the oldest version a sensor may run to take this release.
``mpy``: ``sys.implementation._mpy`` of the interpreter the ``.mpy`` files
were compiled for (bytecode version and native architecture).  The
signature is RSASSA-PKCS1-v1_5 with SHA-256 over the manifest's bytes, with
the city's release key (RSA, 2048 bits or more, e = 65537); the sensor holds
only the public key (``release.pub``, `encode_public_key`), and checks with
``pow(sig, e, n)``, which MicroPython's big integers do fast.  A shared
secret would not do: one opened sensor would give it away for all.
"""

import sys

from protocol.errors import ProtocolError

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are never evaluated there
    pass

MAGIC = "hushlight-release 1"
KEY_MAGIC = "hushlight-release-key 1"
# release bytes in one chunk message (the topic and the 4-byte offset fit
# the sensor's 2176-byte receive buffer beside it)
CHUNK = 1024
# bytes the sensor asks for in one `get`
WINDOW = 4096
# the largest manifest and file a sensor takes
MANIFEST_MAX = 16384
FILE_MAX = 262144
PATH_MAX = 64
# a version: three numbers, each below this
VERSION_PART_MAX = 1000

# the update's state in a sensor's status (field "ota"; protocol.schema.OTA_STATES)
STATES = (
    "idle",  # nothing going on
    "staging",  # a release is being received and checked
    "staged",  # received and checked, switching to it
    "trial",  # running the new version, not confirmed yet
    "confirmed",  # the new version passed its trial
    "refused",  # a release was refused ("ota_reason" says why); running unchanged
    "rolled_back",  # the new version failed its trial; back on the previous one
)

# DER prefix of a SHA-256 DigestInfo (RFC 8017, section 9.2, note 1)
_DIGEST_INFO = b"\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20"
_TOP_DIRS = ("hushlight/", "protocol/")


def _bad(msg: str) -> ProtocolError:
    return ProtocolError("bad_value", msg)


# ---- versions -----------------------------------------------------------------


def parse_version(text: object) -> tuple[int, ...]:
    """The version "1.2.3" as the tuple (1, 2, 3); ProtocolError for anything else."""
    parts = text.split(".") if isinstance(text, str) else ()
    if len(parts) != 3:
        raise _bad("version %r is not MAJOR.MINOR.PATCH, e.g. 0.2.0" % (text,))
    out = []
    for p in parts:
        if not p or len(p) > 3 or not p.isdigit() or (len(p) > 1 and p[0] == "0"):
            raise _bad("version %r is not MAJOR.MINOR.PATCH, e.g. 0.2.0" % (text,))
        out.append(int(p))
    return tuple(out)


# ---- manifest -----------------------------------------------------------------


def check_path(path: str) -> str:
    """A release file's path as the sensor will write it: under hushlight/ or
    protocol/, plain names (a-z, 0-9, '_', '-'), ending in .mpy or .py."""
    ok = 0 < len(path) <= PATH_MAX and (path.endswith(".mpy") or path.endswith(".py"))
    ok = ok and (path.startswith(_TOP_DIRS[0]) or path.startswith(_TOP_DIRS[1]))
    if ok:
        for name in path.split("/"):
            if not name or name[0] == ".":
                ok = False
            for c in name:
                if not ("a" <= c <= "z" or "0" <= c <= "9" or c in "_-."):
                    ok = False
    if not ok:
        raise _bad("release file path %r is not allowed" % (path,))
    return path


def parse_line(line: str) -> tuple[Any, ...]:
    """One manifest line as a tuple: ("version", (0, 2, 0)), ("min_version",
    (0, 1, 0)), ("mpy", 1798), ("file", path, size, sha256 hex) or
    ("magic",); ProtocolError for any other line."""
    words = line.split()
    if line == MAGIC:
        return ("magic",)
    if len(words) == 2 and words[0] in ("version", "min_version"):
        return (words[0], parse_version(words[1]))
    if len(words) == 2 and words[0] == "mpy" and words[1].isdigit() and len(words[1]) < 9:
        return ("mpy", int(words[1]))
    if len(words) == 4 and words[0] == "file":
        size = words[2]
        digest = words[3]
        if not size.isdigit() or len(size) > 7 or int(size) > FILE_MAX:
            raise _bad("file %s: size %r is not 0..%d" % (words[1], size, FILE_MAX))
        if len(digest) != 64 or digest.strip("0123456789abcdef"):
            raise _bad("file %s: %r is not a sha256 in hex" % (words[1], digest))
        return ("file", check_path(words[1]), int(size), digest)
    raise _bad("manifest line %r is not understood" % (line[:40],))


# ---- signature ----------------------------------------------------------------


def parse_public_key(text: str) -> tuple[int, int]:
    """`release.pub`'s text as (n, e); ProtocolError if it is not one."""
    lines = text.split("\n")
    if len(lines) < 3 or lines[0] != KEY_MAGIC:
        raise _bad("not a release key (it must start with %r)" % KEY_MAGIC)
    e = n = 0
    for line in lines[1:]:
        words = line.split()
        if len(words) == 2 and words[0] == "e" and words[1].isdigit():
            e = int(words[1])
        elif len(words) == 2 and words[0] == "n":
            n = int(words[1], 16)
    if e < 3 or not n >> 2047:
        raise _bad("the release key needs e >= 3 and a modulus of 2048 bits or more")
    return n, e


def pkcs1_block(digest: bytes, k: int) -> bytes:
    """The EMSA-PKCS1-v1_5 encoding of a SHA-256 `digest` for a k-byte modulus."""
    t = _DIGEST_INFO + digest
    return b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t


def signed_block(n: int, e: int, sig: bytes) -> "bytes | None":
    """The block the signature `sig` (bytes) carries under the public key
    (n, e): pow(sig, e, n) as k bytes, k the modulus's; None if `sig` cannot
    be a signature for it.  `verify` compares it with `pkcs1_block`; the
    sensor works it out when an offer comes, while its heap has room for a
    pow on 3072-bit numbers, and compares once the manifest is in."""
    k = len(sig)
    # n must have k bytes, its first one not 0 (MicroPython's int has no
    # bit_length; a hex string of n for its length wants a block of 770
    # bytes on a sensor, next to those of the pow)
    if not k or n >> (8 * k) or not n >> (8 * k - 8):
        return None
    s = int.from_bytes(sig, "big")
    if s >= n:
        return None
    return pow(s, e, n).to_bytes(k, "big")


def verify(n: int, e: int, sig: bytes, digest: bytes) -> bool:
    """True if `sig` (bytes) is the RSASSA-PKCS1-v1_5 signature of the
    SHA-256 `digest` under the public key (n, e)."""
    block = signed_block(n, e, sig)
    if block is None or len(digest) != 32:
        return False
    return block == pkcs1_block(digest, len(block))


if sys.implementation.name != "micropython":
    # the tools' side (CPython), in a module the sensor never loads
    from protocol.ota_release import chunk as chunk  # noqa: E402
    from protocol.ota_release import chunk_offset as chunk_offset  # noqa: E402
    from protocol.ota_release import encode_manifest as encode_manifest  # noqa: E402
    from protocol.ota_release import encode_public_key as encode_public_key  # noqa: E402
    from protocol.ota_release import parse_manifest as parse_manifest  # noqa: E402
    from protocol.ota_release import topic as topic  # noqa: E402
