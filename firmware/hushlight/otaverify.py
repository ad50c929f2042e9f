"""The manifest of a release being staged (hushlight.ota), once its
signature is checked (Staging.signed): what it says, read back line by line
(never held parsed whole).  A ValueError refuses the release.

Loaded when the manifest is complete (and when a staging resumes after a
reboot), then dropped again (hushlight.once) with protocol.ota.
"""

import hashlib
import os
import sys

from hushlight import forget, platform
from protocol import ota as release

MANIFEST = "manifest.txt"  # hushlight.ota.MANIFEST


def manifest_done(st):
    """The manifest is in and signed (Staging.signed): what it says is
    checked, then the files are asked for."""
    try:
        _check(st)
        st.done = 0
        st.save()
        st.step("verified")
        to_files(st, 0)
    finally:
        forget("protocol.ota")


def digest(st):
    """The sha256 of the manifest stored in the slot (a staging resumed)."""
    h = hashlib.sha256()
    with open(st.dir + MANIFEST, "rb") as f:
        while True:
            b = f.read(256)
            if not b:
                break
            h.update(b)
    return h.digest()


def _check(st):
    version = min_version = mpy = None
    size = st.size
    try:
        s = os.statvfs(".")
        bs, free = s[1] or s[0], s[4]
    except (OSError, AttributeError):
        bs, free = 4096, None
    blocks = 2  # the manifest and its slot
    with open(st.dir + MANIFEST) as f:
        if f.readline().rstrip("\n") != release.MAGIC:
            raise ValueError("the manifest does not start with %r" % release.MAGIC)
        while True:
            line = f.readline()
            if not line:
                break
            item = release.parse_line(line.rstrip("\n"))
            kind = item[0]
            if kind == "file":
                if item[1].count("/") != 1:
                    raise ValueError("release file path %r is not allowed" % item[1])
                size += item[2]
                blocks += (item[2] + bs - 1) // bs
            elif kind == "version":
                version = item[1]
            elif kind == "min_version":
                min_version = item[1]
            elif kind == "mpy":
                mpy = item[1]
    mine = platform.FW_VERSION
    running = release.parse_version(mine)
    v = st.version
    if version != release.parse_version(v):
        raise ValueError("the manifest's version is not the offer's %s" % v)
    if version == running:
        raise ValueError("version %s is already running" % v)
    if version < running:
        raise ValueError("version %s is a downgrade from %s" % (v, mine))
    if min_version is None or min_version > running:
        low = ".".join([str(x) for x in min_version or ()])
        raise ValueError("version %s needs %s or later; this sensor runs %s" % (v, low, mine))
    loads = getattr(sys.implementation, "_mpy", None)
    if mpy != loads:
        raise ValueError("the release is compiled for mpy %s; this sensor loads %s" % (mpy, loads))
    if size != st.total:
        raise ValueError("the manifest lists %d bytes, the offer %d" % (size, st.total))
    if free is not None and blocks > free:
        raise ValueError(
            "not enough flash: the release needs %d blocks of %d bytes, %d are free"
            % (blocks, bs, free)
        )


def to_files(st, done):
    """Open the manifest at its file lines, past the first `done` files."""
    st.man = open(st.dir + MANIFEST)
    st.have = st.size
    n = 0
    while n < done:
        line = st.man.readline()
        if not line:
            break
        if line.startswith("file "):
            st.have += int(line.split()[2])
            n += 1
    st.done = n
    st.next_file()
