"""Where the sensor's heap goes (console `heap`, the start-up log line).

hushlight.app counts what each part takes as it is built (App.count_heap);
this module, loaded when asked, adds up the rest.
"""

import gc

# the parts App.count_heap counts, in the order they are reported
PARTS = ("code", "config", "store", "audio", "meter", "mqtt", "console")


def table(app, boot):
    """Bytes of heap per part (PARTS); `boot`: what the heap held before
    hushlight.app's first line ran (the interpreter's own objects and that
    module's code); `other`: the rest (tasks, records on their way); `free`."""
    gc.collect()
    used = gc.mem_alloc() - boot
    t = {"boot": boot}
    for part in PARTS:
        t[part] = app.heap.get(part, 0)
        used -= t[part]
    t["other"] = used
    t["free"] = gc.mem_free()
    return t


def line(app, boot):
    """The table as one line for the log."""
    t = table(app, boot)
    return ", ".join(["%s %d B" % (k, t[k]) for k in PARTS + ("other", "free")])
