"""An update's state at boot, and the trial of a new version.

Loaded at boot once an update ever came (ota.json exists; hushlight.app)
and dropped again (hushlight.once), unless a version is on trial: its
checking task keeps the module while the trial lasts.

A version on trial (ota.json, written by hushlight.otaend, boots counted by
the loader, otaboot.py) is confirmed once it is connected, a record it measured
is acknowledged and the self-test's checks of the microphone and the DSP
load pass (hushlight.commands.checks, the console's `selftest` uses them
too).  Not confirmed within `ota_trial_s`: back to the previous version,
with the failing checks as the reason, and a reboot.
"""

import asyncio
import time

from hushlight import forget, once
from hushlight.app import log
from hushlight.store import LEVELS

STAGE = "ota/stage.json"
# the checks of hushlight.commands a trial must pass
TRIAL_CHECKS = ("broker", "mic", "dsp_load")
_LAST_STATES = ("refused", "rolled_back")


def _text(v, n):
    # ota.json is the device's own file, but a status that cannot be encoded
    # would never be sent: only short strings go into it
    return v if type(v) is str and 0 < len(v) <= n else None


def _state(app, state, version, reason):
    app.ota = {"ota": state, "ota_version": version, "ota_reason": reason}


def boot(app):
    """The update's state from ota.json into `app.ota` (status ota,
    ota_version, ota_reason); a version on trial gets its checking task; a
    staging that a reboot cut short resumes (hushlight.start)."""
    import otastate

    d = otastate.read()
    forget("otastate")  # (the loader's module is imported for a moment only)
    version = _text(d.get("version"), 32)
    last = d.get("last")
    if d.get("state") == "trial":
        app.ota_task = asyncio.create_task(_trial(app, app.store.next[LEVELS]))
        _state(app, "trial", version, None)
        log("version %s on trial (boot %s of 3)" % (version, d.get("boots")))
    elif type(last) is dict and last.get("state") in _LAST_STATES:
        _state(app, last["state"], _text(last.get("version"), 32), _text(last.get("reason"), 200))
    elif d.get("slot"):
        _state(app, "confirmed", version, None)
    else:
        _state(app, "idle", None, None)
    try:
        open(STAGE).close()
    except OSError:
        return
    once("otaoffer").resume(app, d)


def failures(app, seq0):
    """What keeps the version on trial from being confirmed: a list of
    sentences, empty when it passes."""
    out = []
    for name, ok, detail in once("commands").checks(app):
        if not ok and name in TRIAL_CHECKS:
            out.append("%s: %s" % (name, detail))
    if not _acked_since(app.store, seq0):
        out.append("records: none acknowledged since the start")
    return out


def _acked_since(store, seq0):
    """Whether a levels record of this boot (seq >= seq0) was acknowledged."""
    q = store.q[LEVELS]
    front = q.front()
    if front is None:
        return store.next[LEVELS] > seq0
    if front > seq0:
        return True
    for seq in q.acked:
        if seq >= seq0:
            return True
    return False


async def _trial(app, seq0):
    """The version on trial, checked every 2 s: confirmed once it passes,
    rolled back when `ota_trial_s` is up (`seq0`: the first levels record
    of this boot)."""
    deadline = time.ticks_add(time.ticks_ms(), app.cfg["ota_trial_s"] * 1000)
    while app.ota_task is not None:
        await asyncio.sleep_ms(2000)
        import otastate

        try:
            _tick(app, otastate, seq0, deadline)
        finally:
            forget("otastate")


def _tick(app, otastate, seq0, deadline):
    failed = failures(app, seq0)
    d = otastate.read()
    version = d.get("version")
    if not failed:
        otastate.step("confirm")
        d["state"] = "confirmed"
        d["last"] = None
        otastate.write(d)
        _state(app, "confirmed", _text(version, 32), None)
        app.ota_task = None
        log("version %s confirmed" % version)
        app.status_changed.set()
    elif time.ticks_diff(time.ticks_ms(), deadline) >= 0:
        reason = "not confirmed in %d s: %s" % (app.cfg["ota_trial_s"], "; ".join(failed))
        otastate.roll_back(d, reason)
        app.ota_task = None
        # (status says rolled_back once the old version runs again)
        app.request_reboot()
