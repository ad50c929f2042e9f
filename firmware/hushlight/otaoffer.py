"""An offer of an update (hushlight.ota): checked, then a staging begins
into the slot that is not running; or, at boot, a staging that a reboot
cut short resumes (ota/stage.json).

Loaded for an offer or that boot and dropped again (hushlight.once) with
protocol.ota.
"""

import asyncio
import binascii
import gc
import json
import os
import time

from hushlight import forget, once, platform
from hushlight.app import log
from protocol import ota as release

STAGE = "ota/stage.json"  # hushlight.ota.STAGE
KEY = "release.pub"
# the largest release a sensor takes (offsets stay small ints)
TOTAL_MAX = 4194304
# unix port, for tests: bytes the flash takes before a write fails with
# ENOSPC, as when something else fills the flash while a release is staged
FLASH_LIMIT = "ota_flash_limit"


def offer(app, payload):
    """An offer message (hushlight.app._on_message)."""
    try:
        o = json.loads(payload)
    except ValueError:
        o = None
    st = app.ota_stage
    try:
        if type(o) is not dict:
            log("update offer ignored: not a JSON object")
        elif o.get("cancel") is True:
            if st is not None:
                log("update to %s cancelled" % st.version)
                st.end(None, "idle")
        elif app.ota_task:
            log("update offer of %r ignored: a version is on trial" % (o.get("version"),))
        elif st is not None and st.offer == o:
            st.kick()  # the same offer again: carry on
        else:
            if st is not None:
                st.end(None, "idle")  # another release: this one goes
            _start(app, o)
    except MemoryError:  # the offer is refused, the sensor runs on
        app.ota = {"ota": "refused", "ota_version": None, "ota_reason": "out of memory"}
        app.status_changed.set()
    finally:
        forget("protocol.ota")
        forget("otastate")


def _check_offer(o):
    """None if the offer's fields are usable, else the reason."""
    try:
        release.parse_version(o.get("version"))
        size = o.get("size")
        total = o.get("total")
        if type(size) is not int or not 0 < size <= release.MANIFEST_MAX:
            return "bad offer: size %r is not 1..%d" % (size, release.MANIFEST_MAX)
        if type(total) is not int or not size <= total <= TOTAL_MAX:
            return "bad offer: total %r is not %d..%d" % (total, size, TOTAL_MAX)
        binascii.a2b_base64(o["sig"])
    except (ValueError, TypeError, KeyError) as e:
        return "bad offer: %s" % e
    try:
        open(KEY).close()
    except OSError:
        return "no release key on this sensor"
    return None


def _block(o):
    """The block the offer's signature carries under release.pub
    (protocol.ota.signed_block), worked out now, while the heap is whole: a
    pow on 3072-bit numbers wants blocks of 770 bytes, which a transfer cuts
    up.  b"" if the signature cannot be one; None when the heap has no room
    now (the staging's task tries again: Staging.read_key).  ValueError if
    release.pub is not a release key."""
    gc.collect()
    try:
        with open(KEY) as f:
            n, e = release.parse_public_key(f.read())
        return release.signed_block(n, e, binascii.a2b_base64(o["sig"])) or b""
    except MemoryError:
        return None


def _staging(app, o, slot, block):
    """A hushlight.ota.Staging of the offer `o` into `slot`."""
    st = once("ota").Staging()
    st.block = block
    st.app = app
    st.offer = o
    st.version = o["version"]
    st.size = o["size"]
    st.total = o["total"]
    st.slot = slot
    st.dir = "ota/" + slot + "/"
    st.have = st.asked = 0
    st.asked_at = st.progress = time.ticks_ms()
    st.event = asyncio.Event()
    st.task = None
    st.over = st.staged = st.checking = False
    st.reopen = -1
    st.f = st.h = st.man = None
    st.left = 0
    st.path = st.digest = ""
    st.done = -1
    st.limit = None
    if platform.UNIX:
        try:
            with open(FLASH_LIMIT) as f:
                st.limit = int(f.read())
        except (OSError, ValueError):
            pass
    app.ota_stage = st
    app.ota = {"ota": "staging", "ota_version": st.version, "ota_reason": None}
    app.status_changed.set()
    return st


def _fresh(st):
    """The manifest's file open for its first byte."""
    import hashlib

    st.f = open(st.dir + "manifest.txt", "wb")
    st.h = hashlib.sha256()


def _start(app, o):
    reason = _check_offer(o)
    block = None
    if reason is None:
        try:
            block = _block(o)
        except (OSError, ValueError) as e:
            reason = "release.pub is not a release key: %s" % e
        if block == b"":
            reason = "the signature does not match this sensor's release key"
    if reason is not None:
        once("otaend").record(app, "refused", o.get("version"), reason)
        return
    import otastate  # (after the key: its digits want room in the heap)

    slot = "b" if otastate.read().get("slot") == "a" else "a"
    st = _staging(app, o, slot, block)
    log("update to %s: staging into slot %s" % (st.version, slot))
    for p in ("ota", "ota/" + slot, st.dir + "hushlight", st.dir + "protocol"):
        try:
            os.mkdir(p)
        except OSError:
            pass  # it exists
    once("otaend").clear(slot)
    if not otastate.read():
        otastate.write({})  # (ota.json is what tells the next boot to look at ota/)
    st.save()
    st.step("offer")
    _fresh(st)
    st.kick()


def resume(app, d):
    """At boot: carry on with the staging ota/stage.json describes (`d`: ota.json)."""
    try:
        try:
            with open(STAGE) as f:
                s = json.load(f)
            o, slot, done = s["offer"], s["slot"], s["files"]
            if slot not in ("a", "b") or type(done) is not int or _check_offer(o) is not None:
                raise ValueError
        except (OSError, ValueError, KeyError, TypeError):
            os.remove(STAGE)
            return
        if slot == d.get("slot") or d.get("state") == "trial":
            os.remove(STAGE)  # switched already: the reboot came before the clean-up
            return
        st = _staging(app, o, slot, None)
        log("update to %s resumes (%d files were complete)" % (st.version, max(done, 0)))
        if done < 0:
            once("otaend").clear(slot)
            _fresh(st)
        else:
            st.reopen = done  # checked again first (Staging.run)
        st.kick()  # (its task asks once connected)
    finally:
        forget("protocol.ota")
        forget("otastate")
