"""The end of staging an update (hushlight.ota): the switch to the new
slot, or a refusal or a cancel that leaves the running version as it is.

Loaded for that moment and dropped again (hushlight.once).
"""

import os

import otastate

from hushlight import forget, platform
from hushlight.app import log

STAGE = "ota/stage.json"  # hushlight.ota.STAGE


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def clear(slot):
    """Empty the slot `slot` (an old version's files, a partial staging)."""
    base = "ota/" + slot
    for top in ("/hushlight", "/protocol"):
        try:
            names = os.listdir(base + top)
        except OSError:
            continue
        for name in names:
            _remove(base + top + "/" + name)
    _remove(base + "/manifest.txt")


def record(app, state, version, reason):
    """An update's end into status and, refused, into ota.json's `last`."""
    try:
        if state == "refused":
            log("update to %s refused: %s" % (version, reason))
            d = otastate.read()
            d["last"] = {"state": state, "version": version, "reason": reason[:200]}
            otastate.write(d)
    finally:
        forget("otastate")
    if type(version) is not str or not 0 < len(version) <= 32:
        version = None
    app.ota = {"ota": state, "ota_version": version, "ota_reason": reason and reason[:200]}
    app.status_changed.set()


def end(st, state, reason):
    """A staging refused (`reason`) or cancelled (state idle): what was
    written goes, the running version carries on."""
    clear(st.slot)
    _remove(STAGE)
    st.app.ota_stage = None
    record(st.app, state, st.version, reason)
    st.event.set()
    forget("protocol.ota")


def switch(st):
    """Every file is in and good: ota.json puts the new slot on trial, then a reboot."""
    try:
        otastate.step("staged")
        d = otastate.read()
        new = {
            "slot": st.slot,
            "version": st.version,
            "prev_slot": d.get("slot"),
            "prev_version": platform.FW_VERSION,
            "state": "trial",
            "boots": 0,
            "last": None,
        }
        otastate.write(new, "switch")
        otastate.step("switched")
        _remove(STAGE)
    finally:
        forget("otastate")
    st.over = True
    st.app.ota = {"ota": "staged", "ota_version": st.version, "ota_reason": None}
    log("update to %s staged; rebooting into it" % st.version)
    st.app.request_reboot()  # the store is flushed on the way out
