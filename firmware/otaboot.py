"""The sensor's loader: which firmware version boots, and the way back.

Lives in the flash root beside boot.py and main.py, with otastate.py, and
is never replaced by an update (hushlight.ota stages one).  The versions on
the flash:

    hushlight/, protocol/          the factory version (flashed)
    ota/a/, ota/b/                 two slots an update is written into
    ota.json                       which one runs, and how sure we are of it

ota.json: {"slot": "a" | "b" | null (factory), "version", "prev_slot",
"prev_version", "state": "confirmed" | "trial", "boots": n, "last": null |
{"state": "refused" | "rolled_back", "version", "reason"}}, always replaced
whole (otastate.write).  Missing or unreadable: factory, confirmed.

Importing this module (main.py does, first) puts the slot of the version to
boot first on sys.path, so that main.py's `from hushlight import app` loads
that version.  A version on trial has its boots counted and is rolled back
when it has not confirmed in 3 boots (otastate.boot) or when it fails to
import (otastate.failed).  The work is done at import, not in a function
called later, and otastate.py is loaded only for a trial: every byte the
loader leaves in the heap is missing from the firmware's margin while it
runs (measured: a call, or a try block in main.py, cost 150-200 bytes).
"""

import json
import sys

# ota.json (ota.tmp alone: a power cut where rename cannot replace a file,
# between removing ota.json and renaming ota.tmp; otastate.write mends it)
_d = {}
for _name in ("ota.json", "ota.tmp"):
    try:
        with open(_name) as _f:
            _d = json.load(_f)
        break
    except (OSError, ValueError):
        pass
if type(_d) is not dict:
    _d = {}
_trial = _d.get("state") == "trial"
if _trial:
    import otastate

    _trial = otastate.boot(_d)
    del otastate
    sys.modules.pop("otastate", None)
if _d.get("slot") in ("a", "b"):
    sys.path.insert(0, "ota/" + _d["slot"])
if _trial:
    # a version on trial that cannot even start goes back at once (a
    # confirmed one is imported by main.py: a try block there would hold
    # heap for as long as the firmware runs)
    try:
        from hushlight import app  # noqa: F401  (main.py takes it from sys.modules)
    except Exception as _e:
        import otastate

        otastate.failed(_d, _e)
sys.modules.pop("otaboot", None)
