"""The update's state on the flash (ota.json, see otaboot.py), shared by
the loader and the firmware (hushlight.otatrial, hushlight.otaoffer,
hushlight.otaend), and the test hook of the update's steps.

Part of the loader: lives in the flash root and is never replaced by an
update.  Imported for the moment it is needed and dropped again, so that
its code and sentences are not in the heap while the firmware runs.
"""

import json
import os
import sys


def read():
    """ota.json as a dict ({} = the factory version, confirmed)."""
    # ota.tmp alone: power lost where rename cannot replace a file (FAT)
    # between removing the old file and renaming the new one
    for name in ("ota.json", "ota.tmp"):
        try:
            with open(name) as f:
                d = json.load(f)
        except (OSError, ValueError):
            continue
        if type(d) is dict:
            return d
    return {}


def write(d, hold=None):
    """Replace ota.json by `d` so that a power cut leaves the old or the new
    one; `hold`: the test hook's step between the two (hushlight.otaend)."""
    with open("ota.tmp", "w") as f:
        f.write(json.dumps(d))
    if hold:
        step(hold)
    try:
        os.rename("ota.tmp", "ota.json")
    except OSError:
        # some filesystems refuse to rename over an existing file
        try:
            os.remove("ota.json")
        except OSError:
            pass
        os.rename("ota.tmp", "ota.json")


def step(name):
    """Test hook of the unix port: say the step, and hold there while the
    file `ota_hold` names it (a test kills the firmware there).  Steps:
    offer, manifest, verified, file, staged, switch, switched (staging),
    trial_boot (here), confirm (hushlight.otatrial)."""
    if sys.platform == "esp32":
        return
    import time

    print("ota: step " + name)
    said = False
    while True:
        try:
            with open("ota_hold") as f:
                if f.read().strip() != name:
                    return
        except OSError:
            return
        if not said:
            print("ota: holding at " + name)
            said = True
        time.sleep(0.1)


def roll_back(d, reason):
    """Back to the version that ran before the trial of `d`, confirmed;
    `last` says why."""
    d["last"] = {"state": "rolled_back", "version": d.get("version"), "reason": reason[:200]}
    d["slot"] = d.get("prev_slot")
    d["version"] = d.get("prev_version")
    d["prev_slot"] = d["prev_version"] = None
    d["state"] = "confirmed"
    d["boots"] = 0
    write(d)
    print("ota: rolled back to %s: %s" % (d["version"] or "the factory version", reason))


def boot(d):
    """The boot of the version on trial in `d` (ota.json), counted; past 3
    boots it is rolled back.  True if it stays on trial."""
    d["boots"] = d.get("boots", 0) + 1
    if d["boots"] > 3:
        roll_back(d, "did not confirm in 3 boots")
        return False
    write(d)
    step("trial_boot")
    return True


def failed(d, e):
    """The version on trial in `d` failed to import (`e`): roll back, reboot."""
    sys.print_exception(e)
    roll_back(d, "version %s failed to start: %r" % (d.get("version"), e))
    if sys.platform == "esp32":
        import machine

        machine.reset()
    # unix port: the marker `hushlight sensor` boots the firmware again on
    with open("reboot", "w") as f:
        f.write("1")
    raise SystemExit(0)
